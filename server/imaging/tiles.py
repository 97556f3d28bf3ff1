"""A picture-to-picture function run over overlapping tiles, the outputs blended: the UNet at every
step of a large refine, upscaler models, the VAE's decoder (docs/upscale.md).

Where the tiles lie and what their pixels weigh is shared/tiles.py's rule. Tiles are taken row
by row and the output is handed on in bands as soon as no later tile can touch it, so besides
the output itself only one row of tiles is held in float: memory does not grow with the picture's
height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from shared.tiles import ramp, spans

# Told before each tile: (tile index, number of tiles). Progress is reported and cancel checked here.
TileCallback = Callable[[int, int], None]
TileFunction = Callable[[torch.Tensor], torch.Tensor]


def bands(x: torch.Tensor, fn: TileFunction, tile: int, overlap: int, feather: int, scale: int = 1,
          on_tile: TileCallback | None = None, unit: int = 1, fit: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """`fn` over the overlapping tiles of `x` [batch, channels, height, width], its outputs (`scale`
    output pixels per tile unit, any channel count) averaged with the tiles' weights. Tiles are cut in
    units of `unit` pixels of `x` (8 for a VAE's encoder: a latent pixel's worth); with `fit`, `tile`
    is only the longest side a tile may have, and each way tiles are as short as their count allows
    (shared/tiles.py). Yields (top row, band) in output rows, top to bottom, each band final and the
    bands covering the output once."""
    height, width = x.shape[-2] // unit, x.shape[-1] // unit
    rows, columns = spans(height, tile, overlap, fit), spans(width, tile, overlap, fit)
    across = [_weights(ramp(x0, x1, width, feather), scale) for x0, x1 in columns]
    count = len(rows) * len(columns)
    total = wsum = None
    top = 0  # output row of total's first row
    for r, (y0, y1) in enumerate(rows):
        down = _weights(ramp(y0, y1, height, feather), scale)
        for c, (x0, x1) in enumerate(columns):
            if on_tile is not None:
                on_tile(r * len(columns) + c, count)
            out = fn(x[..., y0 * unit:y1 * unit, x0 * unit:x1 * unit]).float()
            if total is None:
                total = out.new_zeros((out.shape[0], out.shape[1], 0, width * scale))
                wsum = out.new_zeros((1, 1, 0, width * scale))
            missing = y1 * scale - top - total.shape[-2]
            if missing > 0:
                total = torch.cat([total, total.new_zeros((*total.shape[:2], missing, total.shape[-1]))], dim=-2)
                wsum = torch.cat([wsum, wsum.new_zeros((1, 1, missing, wsum.shape[-1]))], dim=-2)
            weight = (down[:, None] * across[c][None, :]).to(out.device)
            rows_at, cols_at = slice(y0 * scale - top, y1 * scale - top), slice(x0 * scale, x1 * scale)
            total[..., rows_at, cols_at] += out * weight
            wsum[..., rows_at, cols_at] += weight
        # Rows above the next tile row are final.
        done = (rows[r + 1][0] if r + 1 < len(rows) else height) * scale - top
        yield top, total[..., :done, :] / wsum[..., :done, :]
        total, wsum, top = total[..., done:, :], wsum[..., done:, :], top + done


def blended(x: torch.Tensor, fn: TileFunction, tile: int, overlap: int, feather: int,
            on_tile: TileCallback | None = None, unit: int = 1, fit: bool = False) -> torch.Tensor:
    """`bands` put together: the whole output as one tensor (for latents, which are small)."""
    return torch.cat([band for _, band in bands(x, fn, tile, overlap, feather, 1, on_tile, unit, fit)], dim=-2)


def pictures(x: torch.Tensor, fn: TileFunction, tile: int, overlap: int, feather: int, scale: int,
             on_tile: TileCallback | None = None, fit: bool = False) -> np.ndarray:
    """`bands` of an output in 0..1 as 8-bit pictures [batch, height, width, channels]: only the 8-bit
    result grows with the picture."""
    height, width = x.shape[-2:]
    result = None
    for top, band in bands(x, fn, tile, overlap, feather, scale, on_tile, fit=fit):
        if result is None:
            result = np.empty((band.shape[0], height * scale, width * scale, band.shape[1]), np.uint8)
        # In place: the band is this loop's own, and each copy of it would be as large.
        levels = band.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        result[:, top:top + levels.shape[1]] = levels
    return result


def _weights(weights: list[float], scale: int) -> torch.Tensor:
    return torch.tensor(weights, dtype=torch.float32).repeat_interleave(scale)
