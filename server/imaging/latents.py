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

# The VAE works on a picture whole while what it holds fits in this many bytes, and in tiles that do
# beyond: whole is exact, tiles are not (each tile's group norms and attention see only the tile).
# What it holds (`working_bytes`): ACTIVATIONS tensors as deep as its first block at full resolution,
# or its mid-block attention's scores, one for every pair of latent pixels, whichever is more. SD1.5's
# VAE in float32 is whole up to about 590² and tiles of 576² beyond (activations bind); a VAE with a
# shallow first block is bound by its attention, which grows with the square of the area: the tiny
# test VAE is whole up to 1024². A VAE without attention (the demo model's) only by activations.
VAE_BUDGET = 1024**3
ACTIVATIONS = 6
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


@torch.no_grad()
def encode_in_tiles(pipe: Any, picture: PIL.Image.Image, on_tile: TileCallback | None = None) -> torch.Tensor:
    """`encode`, in overlapping tiles blended by weight where the picture is large: the picture is held
    as 8-bit pixels, and only one tile at a time as floats."""
    vae = pipe.vae
    width, height = picture.size
    scale = pipe.vae_scale_factor
    tile = _tile(vae, width // scale, height // scale)
    pixels = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)[None]

    def encode_tile(part: torch.Tensor) -> torch.Tensor:
        normalised = part.to(vae.device, vae.dtype) / 127.5 - 1.0
        return vae.encode(normalised).latent_dist.mode()

    with upcast(vae):
        found = tiles.blended(pixels, encode_tile, tile, tile // VAE_OVERLAP, tile // VAE_OVERLAP, on_tile, scale,
                              fit=True)
    mean, std = _statistics(vae.config, found.device)
    return ((found - mean) * vae.config.scaling_factor / std).to(pipe.unet.dtype)


def _tile(vae: Any, width: int, height: int) -> int:
    """The side of the VAE's latent tiles for a latent of width x height: the whole of a small one."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    if not tiled_vae_needed(vae, width * scale, height * scale):
        return max(width, height)
    return max(1, tile_side(vae) // scale)


def _bytes_per_pixel(vae: Any) -> int:
    return vae.config.block_out_channels[0] * torch.finfo(vae.dtype).bits // 8 * ACTIVATIONS


def working_bytes(vae: Any, width: int, height: int) -> int:
    """The bytes the VAE holds working on a width x height picture whole (see VAE_BUDGET)."""
    activations = width * height * _bytes_per_pixel(vae)
    config = vae.config
    if not getattr(config, "mid_block_add_attention", True):
        return activations
    scale = 2 ** (len(config.block_out_channels) - 1)
    tokens = (width // scale) * (height // scale)
    return max(activations, tokens * tokens * torch.finfo(vae.dtype).bits // 8)


def tile_side(vae: Any) -> int:
    """The side in pixels of the VAE's tiles: the largest multiple of 64 whose square fits VAE_BUDGET."""
    side = int((VAE_BUDGET / _bytes_per_pixel(vae)) ** 0.5) // 64 * 64
    while side > 64 and working_bytes(vae, side, side) > VAE_BUDGET:
        side -= 64
    return max(64, side)


def tiled_vae_needed(vae: Any, width: int, height: int) -> bool:
    """Whether a width x height picture is encoded and decoded in tiles (it does not fit VAE_BUDGET whole)."""
    return working_bytes(vae, width, height) > VAE_BUDGET


@contextmanager
def tiled_vae(vae: Any, width: int, height: int) -> Iterator[None]:
    """Within the block, the VAE encodes and decodes a width x height picture in tiles where it is large
    (diffusers' own tiling: what pipelines encode and decode themselves)."""
    if not tiled_vae_needed(vae, width, height):
        yield
        return
    saved = vae.tile_sample_min_size, vae.tile_latent_min_size
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_sample_min_size = tile_side(vae)
    vae.tile_latent_min_size = vae.tile_sample_min_size // scale
    vae.enable_tiling()
    try:
        yield
    finally:
        vae.disable_tiling()
        vae.tile_sample_min_size, vae.tile_latent_min_size = saved


@torch.no_grad()
def decode_in_tiles(vae: Any, latents: torch.Tensor, on_tile: TileCallback | None = None) -> list[PIL.Image.Image]:
    """Latents of the UNet's (scaled) space to pictures by the VAE, in overlapping tiles blended by
    weight where the picture is large; only the 8-bit pictures grow with the size."""
    config = vae.config
    mean, std = _statistics(config, latents.device)
    latents = latents * std / config.scaling_factor + mean
    scale = 2 ** (len(config.block_out_channels) - 1)
    height, width = latents.shape[-2:]
    tile = _tile(vae, width, height)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z.to(vae.device, vae.dtype)).sample / 2 + 0.5

    with upcast(vae):
        pixels = tiles.pictures(latents, decode, tile, tile // VAE_OVERLAP, tile // VAE_OVERLAP, scale, on_tile,
                                fit=True)
    return [PIL.Image.fromarray(np.ascontiguousarray(picture)) for picture in pixels]
