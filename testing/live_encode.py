"""What the tests and the bench of live encoding share: canvases of flat shapes, a brush stroke across
one, and the sizes of the pictures an encoder is given."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

STROKE_COLOUR = (230, 40, 30)


def shapes(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    """A seeded RGB picture: a background and six filled circles and squares."""
    rng = np.random.default_rng(seed)
    picture = PIL.Image.new("RGB", (width, height), (40, 90, 170))
    draw = PIL.ImageDraw.Draw(picture)
    side = min(width, height)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(side // 10, side // 4))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r, x + r, y + r], fill=colour)
    return picture


def stroked(picture: PIL.Image.Image, x: int, y: int, width: int = 24, height: int = 12) -> PIL.Image.Image:
    """A copy with a 5 px brush line from (x, y) to (x + width, y + height)."""
    out = picture.copy()
    PIL.ImageDraw.Draw(out).line([(x, y), (x + width, y + height)], fill=STROKE_COLOUR, width=5)
    return out


class Encodes:
    """The (height, width) of every picture `module` (an encoder) is given, from now until `close`."""

    def __init__(self, module: torch.nn.Module):
        self.sizes: list[tuple[int, int]] = []
        self._handle = module.register_forward_pre_hook(self._seen)

    def _seen(self, _: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.sizes.append((args[0].shape[-2], args[0].shape[-1]))

    def take(self) -> list[tuple[int, int]]:
        """The sizes seen since the last take."""
        sizes, self.sizes = self.sizes, []
        return sizes

    def close(self) -> None:
        self._handle.remove()
