"""Masks over a latent that cross-attention reads (region prompts, a reference picture's mask): placed
on the canvas, pooled to each resolution the UNet attends at, and cut to the tile the UNet runs on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from shared.crop import Rect
from shared.messages import Mask

from ..imaging import payloads
from . import tile

# How many times a UNet may halve the latent; SD1.5 and SDXL halve three times.
MAX_LEVELS = 6


def latent_mask(mask: Mask, field: str, frame: Rect, latent_size: tuple[int, int]) -> torch.Tensor:
    """`mask`'s coverage over `frame` at latent size: placed by its x, y on the canvas, cropped to the frame
    and zero outside its bounds; soft values survive as area averages. [height, width] in 0..1."""
    coverage = PIL.Image.new("L", (frame.width, frame.height), 0)
    coverage.paste(payloads.to_pil(mask, field), (mask.x - frame.x, mask.y - frame.y))
    small = coverage.resize(latent_size, PIL.Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)


@dataclass
class Coverage:
    """Masks over a latent ([n, h, w], 0..1), read at each resolution the UNet attends at. While the UNet
    runs on a tile of a larger latent (tile.py), they are stretched over that latent and cut to the
    tile, so the tile sees them where they lie in the picture."""

    masks: torch.Tensor
    # What was made from the masks for one tile (None: the whole picture); made again for another.
    _cache: dict = field(default_factory=dict, repr=False, kw_only=True)
    _cached_for: tile.Tile | None = field(default=None, repr=False, kw_only=True)

    def pooled(self, queries: int) -> torch.Tensor:
        """The masks averaged over the positions of a layer with `queries` of them: [n, queries]."""
        masks = self.cached(("here",), self._here)
        size = level_size(tuple(masks.shape[1:]), queries)
        return F.adaptive_avg_pool2d(masks[None], size)[0].flatten(1)

    def at(self, queries: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """`pooled`, cached on `device`."""
        return self.cached(("pooled", queries, dtype, device),
                           lambda: self.pooled(queries).to(device=device, dtype=dtype))

    def cached(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`make()`, made once for the tile the UNet runs on."""
        under = tile.current()
        if under != self._cached_for:
            self._cache, self._cached_for = {}, under
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _here(self) -> torch.Tensor:
        under = tile.current()
        if under is None:
            return self.masks
        stretched = F.interpolate(self.masks[None], size=(under.height, under.width), mode="bilinear")[0]
        return stretched[:, under.box.y:under.box.bottom, under.box.x:under.box.right]


def level_size(latent: tuple[int, int], queries: int) -> tuple[int, int]:
    """The (h, w) a UNet attends at with `queries` positions: the latent halved (rounding up) n times."""
    height, width = latent
    for _ in range(MAX_LEVELS + 1):
        if height * width == queries:
            return height, width
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    raise ValueError(f"no UNet resolution of a {latent[1]}x{latent[0]} latent has {queries} positions")
