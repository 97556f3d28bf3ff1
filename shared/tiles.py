"""How a picture too large to process whole is cut into overlapping tiles, and what each tile's
pixels weigh where tiles overlap.

The server refines large pictures, runs upscaler models and decodes latents in tiles
(docs/upscale.md): every tile the same size, neighbours overlapping by at least the asked
overlap, as few tiles as that allows, spread evenly. The UNet's tiles are the model's native
size; where a tile's size only bounds memory (upscalers, the VAE), tiles are shrunk to the
shortest that need no more of them (`spans`' `fit`), so no more pixels are worked than the overlaps
ask. Where tiles overlap, their outputs are averaged with weights that ramp from near 0 at a
tile's inner edge to 1 `feather` units in, so no tile's edge shows. Pure integer math and lists
of floats, no dependencies; units are whatever the caller tiles (latent pixels, image pixels).
"""

from __future__ import annotations

import math

from .crop import Rect


def spans(length: int, tile: int, overlap: int, fit: bool = False) -> list[tuple[int, int]]:
    """[start, end) of the tiles covering 0..length: each `tile` long (one tile of `length` when that
    is shorter), consecutive ones overlapping by at least `overlap`, the first at 0, the last ending at
    `length`, the rest spread evenly between them. With `fit`, `tile` is the longest a tile may be,
    and tiles are as short as covering the length in that many allows: 512 px in tiles of at most
    256 overlapping by 16 takes three either way, of 182 rather than 256 (9 x 182² pixels worked
    rather than 9 x 256²)."""
    if length < 1 or tile < 1:
        raise ValueError(f"length and tile must be at least 1, got {length} and {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be at least 0 and less than the tile ({tile}), got {overlap}")
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    if fit:
        tile = math.ceil((length + (count - 1) * overlap) / count)
    # Evenly spaced starts are at most tile - overlap apart, and so are their rounded values:
    # tile - overlap is a whole number.
    starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
    return [(start, start + tile) for start in starts]


def grid(width: int, height: int, tile: int, overlap: int) -> list[Rect]:
    """The tiles covering a width x height picture, row by row (see `spans`)."""
    return [Rect(x, y, right - x, bottom - y)
            for y, bottom in spans(height, tile, overlap) for x, right in spans(width, tile, overlap)]


def ramp(start: int, end: int, length: int, feather: int) -> list[float]:
    """The weight of each unit of the span [start, end) of 0..length: rising from 1/(2 feather) to 1
    over `feather` units from each end that lies inside the picture, 1 elsewhere and at the picture's
    own edges. Never 0, so every unit is covered by some weight. feather 0 weighs everything 1 (a
    plain average, as MultiDiffusion does)."""
    weights = [1.0] * (end - start)
    if feather <= 0:
        return weights
    for i in range(min(feather, end - start)):
        edge = (i + 0.5) / feather
        if start > 0:
            weights[i] = min(weights[i], edge)
        if end < length:
            weights[-1 - i] = min(weights[-1 - i], edge)
    return weights
