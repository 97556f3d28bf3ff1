"""Pictures to the UNet's latents and back, outside the pipelines: the start picture of an inpaint
encoded once, the fast decode of live frames with a tiny autoencoder (models/tiny_decoders.py), and
the VAE in tiles for large pictures (docs/upscale.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import PIL.Image
import torch

from . import tiles
from .tiles import TileCallback

# Pictures larger than this many times the VAE's own sample size (its training tiles: 512² for SD1.5,
# 1024² for SDXL) each way are encoded and decoded in tiles, so memory stays that of this size.
TILED_ABOVE = 2
# Neighbouring VAE tiles overlap by a quarter tile and fade over it, as diffusers' own tiling does.
VAE_OVERLAP = 4


def encode(pipe: Any, picture: PIL.Image.Image) -> torch.Tensor:
    """The scaled latents of `picture` (the distribution's mode: no sampling noise), as the UNet takes them."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(picture)
    with upcast(vae), torch.no_grad():
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    mean, std = _statistics(vae.config, latents.device)
    return ((latents - mean) * vae.config.scaling_factor / std).to(pipe.unet.dtype)


@contextmanager
def upcast(vae: Any) -> Iterator[None]:
    """SDXL's VAE overflows in float16; its config asks for float32 (as diffusers' pipelines do)."""
    dtype = vae.dtype
    if not (dtype == torch.float16 and getattr(vae.config, "force_upcast", False)):
        yield
        return
    vae.to(torch.float32)
    try:
        yield
    finally:
        vae.to(dtype)


def _statistics(config: Any, device: torch.device) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """The mean and standard deviation the VAE's latents are normalised by (SDXL-style configs give
    them per channel; otherwise 0 and 1, and only `scaling_factor` applies)."""
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is None or std is None:
        return 0.0, 1.0
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


@torch.no_grad()
def decode(decoder: torch.nn.Module, latents: torch.Tensor) -> list[PIL.Image.Image]:
    """Latents of the UNet's (scaled) space to pictures, by a tiny autoencoder."""
    latents = latents.to(decoder.device, decoder.dtype) / decoder.config.scaling_factor
    pixels = decoder.decode(latents).sample
    pixels = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [PIL.Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in pixels]


def tiled_vae_needed(vae: Any, width: int, height: int) -> bool:
    """Whether a width x height picture is encoded and decoded in tiles."""
    side = TILED_ABOVE * vae.config.sample_size
    return width * height > side * side


@contextmanager
def tiled_vae(vae: Any, width: int, height: int) -> Iterator[None]:
    """Within the block, the VAE encodes and decodes a width x height picture in tiles where it is large
    (diffusers' own tiling: what pipelines encode and decode themselves)."""
    if not tiled_vae_needed(vae, width, height):
        yield
        return
    vae.enable_tiling()
    try:
        yield
    finally:
        vae.disable_tiling()


@torch.no_grad()
def decode_in_tiles(vae: Any, latents: torch.Tensor, on_tile: TileCallback | None = None) -> list[PIL.Image.Image]:
    """Latents of the UNet's (scaled) space to pictures by the VAE, in overlapping tiles blended by
    weight where the picture is large; only the 8-bit pictures grow with the size."""
    config = vae.config
    mean, std = _statistics(config, latents.device)
    latents = latents * std / config.scaling_factor + mean
    scale = 2 ** (len(config.block_out_channels) - 1)
    height, width = latents.shape[-2:]
    whole = not tiled_vae_needed(vae, width * scale, height * scale)
    tile = max(width, height) if whole else config.sample_size // scale

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z.to(vae.device, vae.dtype)).sample / 2 + 0.5

    with upcast(vae):
        pixels = tiles.pictures(latents, decode, tile, tile // VAE_OVERLAP, tile // VAE_OVERLAP, scale, on_tile)
    return [PIL.Image.fromarray(np.ascontiguousarray(picture)) for picture in pixels]
