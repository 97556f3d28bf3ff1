"""Pictures to the UNet's latents and back, outside the pipelines, by one of two coders: the model's
full VAE, or a tiny autoencoder (models/tiny_autoencoders.py), several times faster, for live frames.

Both work in the space the UNet works in: the VAE's latents (the distribution's mode, no sampling
noise) scaled as the model's config says. Pipelines are called with latents in and latents out, so
every picture of every job is encoded and decoded here, and a live frame's latents can be decoded
again at full quality when the artist applies it (generate.py). The full VAE works in tiles on a
picture too large for it whole (docs/upscale.md)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch

from ..models.tiny_autoencoders import TinyAutoencoder
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


class Coder(ABC):
    name: ClassVar[str]  # as the result's `info` reports it
    # Whether a latent depends only on the pixels near it, so that a part of a picture can be encoded
    # alone (imaging/changes.py): true of convolutions alone, false where group norms or attention
    # reach across the whole picture.
    local: ClassVar[bool]

    def __init__(self, pipe: Any):
        self.pipe = pipe

    @property
    def label(self) -> str:
        """Tells apart coders whose latents of one picture differ."""
        return self.name

    @property
    def scale(self) -> int:
        """Pixels per latent pixel, each way."""
        return self.pipe.vae_scale_factor

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
    local = False

    def __init__(self, pipe: Any, sdxl: bool = False):
        super().__init__(pipe)
        # SDXL's VAE overflows in float16 (its config says force_upcast); SD1.5's pipelines never upcast.
        self.upcast = sdxl and _asks_upcast(pipe.vae)

    def encode(self, picture: PIL.Image.Image) -> torch.Tensor:
        vae = self.pipe.vae
        if tiled_vae_needed(vae, *picture.size):
            return encode_in_tiles(self.pipe, picture)
        return encode(self.pipe, picture, self.upcast)

    def decode(self, latents: torch.Tensor) -> list[PIL.Image.Image]:
        vae = self.pipe.vae
        scale = self.pipe.vae_scale_factor
        if tiled_vae_needed(vae, latents.shape[-1] * scale, latents.shape[-2] * scale):
            return decode_in_tiles(vae, latents)
        with float32_if(self.upcast, vae):
            # Cast, then scale, in the order the pipelines do: the same latents give the same pixels.
            latents = to_vae_space(vae.config, latents.to(vae.device, vae.dtype))
            with torch.no_grad():
                pixels = vae.decode(latents).sample
        return self._pictures(pixels)


class TinyCoder(Coder):
    name = "tiny"
    local = True

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


def encode(pipe: Any, picture: PIL.Image.Image, upcast: bool | None = None) -> torch.Tensor:
    """The latents of `picture` by the full VAE, whole, as the UNet takes them (the distribution's mode:
    no sampling noise). `upcast`: the VAE in float32 meanwhile; by default as its config asks."""
    vae = pipe.vae
    with float32_if(_asks_upcast(vae) if upcast is None else upcast, vae), torch.no_grad():
        latents = vae.encode(pipe.image_processor.preprocess(picture).to(vae.device, vae.dtype)).latent_dist.mode()
    return to_unet_space(vae.config, latents).to(pipe.unet.dtype)


def to_unet_space(config: Any, latents: torch.Tensor) -> torch.Tensor:
    """The VAE's latents as the UNet takes them: normalised where the config gives per-channel statistics
    (SDXL-style), and scaled."""
    mean, std = _latent_statistics(config, latents)
    return latents * config.scaling_factor if mean is None else (latents - mean) * config.scaling_factor / std


def to_vae_space(config: Any, latents: torch.Tensor) -> torch.Tensor:
    """`to_unet_space` undone, in the order diffusers' pipelines do it."""
    mean, std = _latent_statistics(config, latents)
    return latents / config.scaling_factor if mean is None else latents * std / config.scaling_factor + mean


def _latent_statistics(config: Any, latents: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The per-channel mean and deviation some VAEs normalise their latents by, else (None, None)."""
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is None or std is None:
        return None, None
    return (torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype),
            torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype))


def _asks_upcast(vae: Any) -> bool:
    """Whether the VAE's config asks for float32 where it is in float16 (SDXL's overflows)."""
    return bool(getattr(vae.config, "force_upcast", False))


# --- the full VAE in tiles, for large pictures --------------------------------------------------------


@torch.no_grad()
def encode_in_tiles(pipe: Any, picture: PIL.Image.Image, on_tile: TileCallback | None = None) -> torch.Tensor:
    """`FullVAE.encode`, in overlapping tiles blended by weight where the picture is large: the picture is
    held as 8-bit pixels, and only one tile at a time as floats."""
    vae = pipe.vae
    width, height = picture.size
    scale = pipe.vae_scale_factor
    tile = _tile(vae, width // scale, height // scale)
    pixels = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)[None]

    def encode_tile(part: torch.Tensor) -> torch.Tensor:
        normalised = part.to(vae.device, vae.dtype) / 127.5 - 1.0
        return vae.encode(normalised).latent_dist.mode()

    with float32_if(_asks_upcast(vae), vae):
        found = tiles.blended(pixels, encode_tile, tile, tile // VAE_OVERLAP, tile // VAE_OVERLAP, on_tile, scale,
                              fit=True)
    return to_unet_space(vae.config, found).to(pipe.unet.dtype)


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
    latents = to_vae_space(vae.config, latents)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    height, width = latents.shape[-2:]
    tile = _tile(vae, width, height)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z.to(vae.device, vae.dtype)).sample / 2 + 0.5

    with float32_if(_asks_upcast(vae), vae):
        pixels = tiles.pictures(latents, decode, tile, tile // VAE_OVERLAP, tile // VAE_OVERLAP, scale, on_tile,
                                fit=True)
    return [PIL.Image.fromarray(np.ascontiguousarray(picture)) for picture in pixels]
