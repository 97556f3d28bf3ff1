"""ControlNets: which one reads a control of a given kind for a model, and loading it.

A ControlNet comes as a diffusers folder (config.json and safetensors weights) or a single
`.safetensors` file, in diffusers' key layout or the original one (lllyasviel's SD1.5 files). A
single file carries no config: its own `<stem>.config/config.json` is used where there is one, else
the family's UNet config shipped in configs/, which is what a ControlNet copies of its UNet. Union
ControlNets (diffusers' `ControlNetUnionModel`: one model, many kinds) are diffusers files.

Loaded ControlNets are kept, most recently used last, up to CAPACITY: a live session with a sketch
and a depth map uses the same two at every frame.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import torch
from diffusers import ControlNetModel, ControlNetUnionModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from safetensors.torch import load_file

from ..errors import Unsupported
from .entry import ModelEntry
from .identify import CONTROLNET_HINT
from .loaded import Loaded
from .loading import CONFIGS
from .registry import CONFIG_SUFFIX, Registry

CAPACITY = 4
Net = ControlNetModel | ControlNetUnionModel


class ControlNets:
    def __init__(self, registry: Registry, device: torch.device, dtype: torch.dtype, capacity: int = CAPACITY):
        self.registry = registry
        self._loaded = Loaded(registry, "ControlNet",
                              lambda entry: load(entry).to(device, dtype).eval().requires_grad_(False), capacity)

    def choose(self, kind: str, checkpoint: ModelEntry, name: str | None, field: str) -> ModelEntry:
        """The ControlNet named (it must read `kind` for the checkpoint's family), else the first installed
        that does; Unsupported naming `field`'s kind when none is. The built-in demo model's latents and
        features are its own: it takes only its own ControlNets, and other checkpoints never take them."""
        family = checkpoint.family
        if name is not None:
            entry = self.registry.get(name, "controlnet", f"{field}.model")
            if kind not in entry.kinds:
                raise Unsupported(f"ControlNet {name!r} reads {', '.join(entry.kinds)}, not {kind}", f"{field}.kind")
            if entry.family != family or entry.embedded != checkpoint.embedded:
                raise Unsupported(f"ControlNet {name!r} is not made for {checkpoint.name}", f"{field}.model")
            return entry
        usable = [e for e in self.registry.entries() if e.kind == "controlnet" and not e.refused
                  and e.family == family and e.embedded == checkpoint.embedded and kind in e.kinds]
        if not usable:
            raise Unsupported(f"no {kind} ControlNet for {checkpoint.name} is installed (controlnet/ folder)",
                              f"{field}.kind")
        # A model made for the kind reads it better than a union model's share of it.
        return min(usable, key=lambda e: e.union)

    def get(self, entry: ModelEntry, field: str) -> Net:
        """`entry` loaded (ModelBroken naming `field` where it cannot be), kept for the next jobs."""
        return self._loaded.get(entry, field)

    def unload(self) -> None:
        """Let go of every loaded ControlNet (after the device ran out of memory); each loads again when used."""
        self._loaded.clear()


def load(entry: ModelEntry) -> Net:
    """A ControlNet from its folder or single file; weights as stored (float32 on CPU)."""
    cls = ControlNetUnionModel if entry.union else ControlNetModel
    if entry.format == "diffusers":
        return cls.from_pretrained(entry.path, use_safetensors=True)
    config = single_file_config(entry, cls)
    weights = load_file(entry.path)
    if CONTROLNET_HINT not in weights:
        # The original layout: diffusers converts its names (safetensors only: nothing is unpickled).
        weights = convert_controlnet_checkpoint(weights, config)
    net = cls.from_config(config)
    net.load_state_dict(weights, strict=True)
    return net


def single_file_config(entry: ModelEntry, cls: type[Net]) -> dict[str, Any]:
    """Its own `<stem>.config/config.json`, else what a ControlNet copies of its family's UNet config."""
    own = entry.path.with_suffix(CONFIG_SUFFIX) / "config.json"
    if own.is_file():
        return json.loads(own.read_text())
    config = json.loads((CONFIGS / str(entry.family) / "unet" / "config.json").read_text())
    accepted = inspect.signature(cls.__init__).parameters
    return {key: value for key, value in config.items() if key in accepted} | {"in_channels": 4}
