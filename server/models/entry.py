"""One model file or folder as the registry knows it: what it is, and why it is refused if it is."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.messages import ModelDefaults, ModelInfo

Kind = Literal["checkpoint", "lora", "embedding", "upscaler", "controlnet", "ipadapter", "clip_vision"]
Family = Literal["sd15", "sdxl"]
# Checkpoints: `inpaint` is a 9-channel UNet that takes the masked picture and the mask besides the latents.
# IP-Adapters (docs/reference.md): how they read a picture: `plain` (4 tokens from the image embedding),
# `plus` (16 from the hidden states), `face` (a plus adapter trained on faces), `full_face` (every hidden
# state through an MLP).
Variant = Literal["regular", "inpaint", "plain", "plus", "face", "full_face"]
# What an image encoder gives, or an IP-Adapter takes: ("hidden", width) for the penultimate hidden states,
# ("embeds", width) for the projected image embedding.
Feature = tuple[str, int]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: Kind
    path: Path
    format: Literal["diffusers", "single_file"]
    family: Family | None
    variant: Variant | None = None
    refused: str | None = None  # why it cannot be used, or None
    embedded: bool = False
    trigger_words: tuple[str, ...] = ()
    # The model's own tiny autoencoder (the demo model has one); others use their family's (vae-approx/).
    tiny_autoencoder: Path | None = None
    scale: int | None = None  # upscalers: how many times larger each side comes out
    defaults: ModelDefaults | None = None  # what it is best used with (defaults.py)
    kinds: tuple[str, ...] = ()  # ControlNets: the control kinds it reads (a union model, several)
    union: bool = False  # ControlNets: one model for many kinds (diffusers' ControlNetUnionModel)
    # IP-Adapters: the one image feature they take; CLIP vision encoders: both they give.
    features: tuple[Feature, ...] = ()

    def info(self) -> ModelInfo:
        """What clients see: no paths."""
        return ModelInfo(name=self.name, kind=self.kind, format=self.format, family=self.family,
                         variant=self.variant, refused=self.refused, embedded=self.embedded,
                         trigger_words=list(self.trigger_words), defaults=self.defaults, scale=self.scale,
                         kinds=list(self.kinds))

    def fingerprint(self) -> str:
        """A hex digest that changes when the file does, so an edited LoRA or embedding is loaded anew."""
        try:
            stat = self.path.stat()
            identity = f"{self.path}:{stat.st_mtime_ns}:{stat.st_size}"
        except OSError:
            identity = str(self.path)
        return hashlib.sha1(identity.encode()).hexdigest()

    @property
    def is_inpaint_model(self) -> bool:
        """A 9-channel inpaint model: every mode runs through its inpaint pipeline."""
        return self.variant == "inpaint"


def is_valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name != ""
        and not any(bad in name for bad in ("/", "\\", "..", "\x00"))
    )
