"""Pictures to the UNet's latents and back, outside the pipelines, by one of two coders: the model's
full VAE, or a tiny autoencoder (models/tiny_autoencoders.py), several times faster, for live frames.

Both work in the space the UNet works in: the VAE's latents (the distribution's mode, no sampling
noise) scaled as the model's config says. Pipelines are called with latents in and latents out, so
every picture of every job is encoded and decoded here, and a live frame's latents can be decoded
again at full quality when the artist applies it (generate.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import PIL.Image
import torch

from ..models.tiny_autoencoders import TinyAutoencoder


class Coder(ABC):
    name: ClassVar[str]  # as the result's `info` reports it

    def __init__(self, pipe: Any):
        self.pipe = pipe

    @property
    def label(self) -> str:
        """Tells apart coders whose latents of one picture differ."""
        return self.name

    @abstractmethod
    def encode(self, picture: PIL.Image.Image) -> torch.Tensor:
        """The latents of `picture`, batch of one, in the UNet's dtype."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> list[PIL.Image.Image]:
        """One picture per latent of the batch."""

    def _pixels(self, picture: PIL.Image.Image) -> torch.Tensor:
        return self.pipe.image_processor.preprocess(picture)

    def _pictures(self, pixels: torch.Tensor) -> list[PIL.Image.Image]:
        # As the pipelines do, so a full decode here gives their pictures exactly.
        return self.pipe.image_processor.postprocess(pixels, output_type="pil", do_denormalize=[True] * len(pixels))


class FullVAE(Coder):
    name = "vae"

    def __init__(self, pipe: Any, sdxl: bool = False):
        super().__init__(pipe)
        # SDXL's VAE overflows in float16 (its config says force_upcast); SD1.5's pipelines never upcast.
        self.upcast = sdxl and getattr(pipe.vae.config, "force_upcast", False)

    def encode(self, picture: PIL.Image.Image) -> torch.Tensor:
        vae = self.pipe.vae
        with float32_if(self.upcast, vae):
            with torch.no_grad():
                latents = vae.encode(self._pixels(picture).to(vae.device, vae.dtype)).latent_dist.mode()
        mean, std = _latent_statistics(vae, latents)
        scale = vae.config.scaling_factor
        latents = latents * scale if mean is None else (latents - mean) * scale / std
        return latents.to(self.pipe.unet.dtype)

    def decode(self, latents: torch.Tensor) -> list[PIL.Image.Image]:
        vae = self.pipe.vae
        with float32_if(self.upcast, vae):
            # Cast, then scale, in the order the pipelines do: the same latents give the same pixels.
            latents = latents.to(vae.device, vae.dtype)
            mean, std = _latent_statistics(vae, latents)
            scale = vae.config.scaling_factor
            latents = latents / scale if mean is None else latents * std / scale + mean
            with torch.no_grad():
                pixels = vae.decode(latents).sample
        return self._pictures(pixels)


class TinyCoder(Coder):
    name = "tiny"

    def __init__(self, pipe: Any, tiny: TinyAutoencoder):
        super().__init__(pipe)
        self.tiny = tiny

    @property
    def label(self) -> str:
        return f"{self.name}:{self.tiny.name}"

    @torch.no_grad()
    def encode(self, picture: PIL.Image.Image) -> torch.Tensor:
        module = self.tiny.module
        latents = module.encode(self._pixels(picture).to(module.device, module.dtype)).latents
        return (latents * module.config.scaling_factor).to(self.pipe.unet.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[PIL.Image.Image]:
        module = self.tiny.module
        latents = latents.to(module.device, module.dtype) / module.config.scaling_factor
        return self._pictures(module.decode(latents).sample)


@contextmanager
def float32_if(needed: bool, vae: Any) -> Iterator[None]:
    """The VAE in float32 while inside, where it is in float16 and `needed`, as diffusers' SDXL
    pipelines do. The model loader keeps such a VAE in float32 (models/loading.py); this covers one
    that a pipeline turned back (the SDXL inpaint pipeline does, after encoding)."""
    dtype = vae.dtype
    upcast = needed and dtype == torch.float16
    if upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(dtype)


def _latent_statistics(vae: Any, latents: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The per-channel mean and deviation some VAEs normalise their latents by, else (None, None)."""
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is None or std is None:
        return None, None
    return (torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype),
            torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype))
