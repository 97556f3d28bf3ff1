"""Which part of the canvas an inpaint reads, and how far its result may reach.

The plugin reads only `context_rect(...)` from the canvas; the server grows and feathers the
selection by `edge_defaults(...)`. Both sides import these functions, so they always agree.
Pure integer math, no dependencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Why these numbers (docs/inpaint.md): the model needs surroundings to continue the picture.
# Half the selection's mean side on every side gives it about twice the selection's area of
# context; small selections get at least MIN_PAD, and the whole context is at least
# MIN_CONTEXT wide so a tiny selection still sees a recognisable neighbourhood.
CONTEXT_FACTOR = 0.5
MIN_PAD = 32
MIN_CONTEXT = 256
# Grow and feather scale with the selection's diagonal: a 100 px selection fades over ~4 px,
# a 1000 px one over ~40 px, so the seam hides without eating into nearby detail.
GROW_FACTOR = 0.02
FEATHER_FACTOR = 0.04
MIN_GROW, MAX_GROW = 2, 64
MIN_FEATHER, MAX_FEATHER = 2, 128


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def intersect(self, other: Rect) -> Rect:
        x, y = max(self.x, other.x), max(self.y, other.y)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        return Rect(x, y, max(0, right - x), max(0, bottom - y))

    def contains(self, other: Rect) -> bool:
        return (self.x <= other.x and self.y <= other.y
                and other.right <= self.right and other.bottom <= self.bottom)

    def grown(self, amount: int) -> Rect:
        return Rect(self.x - amount, self.y - amount, self.width + 2 * amount, self.height + 2 * amount)


@dataclass(frozen=True)
class Edge:
    """How far the result reaches beyond the selection (grow) and over how many pixels it fades (feather)."""

    grow: int
    feather: int

    @property
    def reach(self) -> int:
        return self.grow + self.feather


def edge_defaults(selection: Rect) -> Edge:
    diagonal = math.hypot(selection.width, selection.height)
    grow = _clamp(round(GROW_FACTOR * diagonal), MIN_GROW, MAX_GROW)
    feather = _clamp(round(FEATHER_FACTOR * diagonal), MIN_FEATHER, MAX_FEATHER)
    return Edge(grow, feather)


def context_rect(selection: Rect, canvas: Rect, edge: Edge | None = None) -> Rect:
    """The region of the canvas to send for an inpaint of `selection` (its bounding box).

    Padded on every side by context proportional to the selection (at least MIN_PAD and at
    least the edge's reach, so the faded border has real pixels under it), widened to
    MIN_CONTEXT where the canvas allows, and kept inside the canvas.
    """
    if selection.is_empty:
        raise ValueError("the selection is empty")
    edge = edge or edge_defaults(selection)
    mean_side = (selection.width + selection.height) / 2
    pad = max(MIN_PAD, round(CONTEXT_FACTOR * mean_side), edge.reach)
    wanted = selection.grown(pad)
    x, width = _widen(wanted.x, wanted.width, MIN_CONTEXT)
    y, height = _widen(wanted.y, wanted.height, MIN_CONTEXT)
    return _fit_inside(Rect(x, y, width, height), canvas)


def _widen(start: int, size: int, minimum: int) -> tuple[int, int]:
    if size >= minimum:
        return start, size
    extra = minimum - size
    return start - extra // 2, minimum


def _fit_inside(rect: Rect, canvas: Rect) -> Rect:
    """Shift `rect` into the canvas where it fits, otherwise clip it to the canvas."""
    width, height = min(rect.width, canvas.width), min(rect.height, canvas.height)
    x = _clamp(rect.x, canvas.x, canvas.right - width)
    y = _clamp(rect.y, canvas.y, canvas.bottom - height)
    return Rect(x, y, width, height)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
