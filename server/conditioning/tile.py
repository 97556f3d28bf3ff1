"""The tile of a larger latent the UNet is running on, while modes/tiled.py runs one.

Conditioning is placed over a whole picture: region and reference masks over its latent, control
images over its pixels. When an upscale's refine runs the UNet tile by tile, each of them reads the
part under the tile from here. A context variable, set and read on the job's thread, so that what a
job's processors hold is never rewritten for a tile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from shared.crop import Rect


@dataclass(frozen=True)
class Tile:
    box: Rect  # in latent pixels of the whole latent
    height: int  # the whole latent's
    width: int


_CURRENT: ContextVar[Tile | None] = ContextVar("tile", default=None)


def current() -> Tile | None:
    """The tile the UNet is running on; None while it runs on a whole picture."""
    return _CURRENT.get()


@contextmanager
def running_on(box: Rect, height: int, width: int) -> Iterator[None]:
    """Within the block the UNet runs on `box` of a latent of `height` x `width`."""
    token = _CURRENT.set(Tile(box, height, width))
    try:
        yield
    finally:
        _CURRENT.reset(token)
