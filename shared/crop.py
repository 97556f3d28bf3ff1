"""Which part of the canvas an inpaint reads, and how far its result may reach.

The plugin reads only `context_rect(...)` from the canvas; the server grows and feathers the
selection by `edge_defaults(...)` and applies the same crop rule to what it receives. Both sides
import these functions, so they always agree. Pure integer math, no dependencies.

Nothing here depends on the canvas size except the final clamp: a 256 px selection costs the
same on a 1024² canvas as on an 8192² one (docs/inpaint.md has the measurement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .fills import FILLS

# Why these numbers (docs/inpaint.md): the model needs surroundings to continue the picture.
# Half the selection's mean side on every side gives it about four times the selection's area
# in all; small selections get at least MIN_PAD, and the whole context is at least MIN_CONTEXT
# wide so a tiny selection still sees a recognisable neighbourhood. The context is scaled to
# the model's native area before diffusion, so MIN_CONTEXT also caps the enlargement: at most
# 512/384 for SD1.5 and 1024/384 for SDXL, where textures keep a plausible scale.
CONTEXT_FACTOR = 0.5
MIN_PAD = 32
MIN_CONTEXT = 384
# Grow and feather scale with the selection's diagonal: a 100 px selection is grown by 3 px and
# fades over 7 px, a 1000 px one by 28 px over 71 px. Grow makes new content cover the old
# edge's anti-aliased fringe; the feather is a linear alpha ramp, so the colour change per pixel
# across it is at most 1/feather of the difference. The minimums keep the fade at least a few
# pixels wide for a one-pixel selection; the maximums stop a huge selection from repainting a
# wide band around it.
GROW_FACTOR = 0.02
FEATHER_FACTOR = 0.05
MIN_GROW, MAX_GROW = 2, 64
MIN_FEATHER, MAX_FEATHER = 4, 128


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

    def relative_to(self, origin: Rect) -> Rect:
        """This rectangle in the coordinates of `origin`'s top-left corner."""
        return Rect(self.x - origin.x, self.y - origin.y, self.width, self.height)


@dataclass(frozen=True)
class Edge:
    """How far the result reaches beyond the selection (grow) and over how many pixels it fades (feather).

    The result is fully opaque up to `grow` pixels from the selection and exactly transparent from
    `reach` pixels on.
    """

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


def context_rect(selection: Rect, canvas: Rect, edge: Edge | None = None, fill: str = "auto") -> Rect:
    """The region of the canvas to send for an inpaint of `selection` (its bounding box).

    Padded on every side by context proportional to the selection (at least MIN_PAD and at
    least the edge's reach, so the faded border has real pixels under it), widened to
    MIN_CONTEXT where the canvas allows, and kept inside the canvas. `replace_background`
    repaints everything outside the selection, so its context is the whole canvas.
    Applying the rule to its own result changes nothing, which lets the server re-apply it
    to whatever a client sends.
    """
    if selection.is_empty:
        raise ValueError("the selection is empty")
    if FILLS[fill].whole_canvas:
        return canvas
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
