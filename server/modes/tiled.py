"""Denoising a picture larger than the model handles well: at every step the UNet runs on
overlapping latent tiles and their predictions are blended by weight (MultiDiffusion, with
feathered weights; docs/upscale.md says why and what the seams measure).

Blending the noise predictions is blending the tiles' next latents: every sampler's step is linear
in the model's output, so one sampler over the whole picture steps exactly as the weighted average
of per-tile steps would. The pipeline, its sampler, classifier-free guidance and the step callbacks
run as for any picture; only the UNet's forward is replaced, for the duration of the block. Region
prompts, reference masks and control images see the part of the picture under each tile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from shared.tiles import grid

from ..conditioning.tile import running_on
from ..imaging import tiles
from ..imaging.tiles import TileCallback

# Tiles overlap by this share of their side, and fade over all of the overlap: measured in
# docs/upscale.md, a quarter hides the seams at a third more UNet work than no overlap.
OVERLAP = 4


def tile_side(native_side: int, latent_scale: int) -> int:
    """Latent tiles are the model's native size: what it was trained to compose."""
    return native_side // latent_scale


@contextmanager
def tiled_unet(unet: torch.nn.Module, tile: int, on_tile: TileCallback | None = None,
               overlap: int | None = None, feather: int | None = None) -> Iterator[None]:
    """Within the block, `unet` denoises latents larger than `tile` (latent pixels) in overlapping
    tiles, telling `on_tile` before each one; conditioning placed over the whole picture reads the part
    under each tile (conditioning/tile.py)."""
    overlap = tile // OVERLAP if overlap is None else overlap
    feather = overlap if feather is None else feather
    forward = unet.forward

    def tiled_forward(sample: torch.Tensor, timestep: Any, *args: Any, return_dict: bool = True,
                      **kwargs: Any) -> Any:
        height, width = sample.shape[-2:]
        offsets = iter(grid(width, height, tile, overlap))  # the tiles `blended` cuts, in its order

        def one(part: torch.Tensor) -> torch.Tensor:
            box = next(offsets)
            with running_on(box, height, width):
                return forward(part, timestep, *args, return_dict=False, **kwargs)[0]

        out = tiles.blended(sample, one, tile, overlap, feather, on_tile).to(sample.dtype)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    unet.forward = tiled_forward
    try:
        yield
    finally:
        del unet.forward

