"""Sizes the model can work at: multiples of its latent scale, near its native area."""

from __future__ import annotations

import math


def round_to_multiple(value: float, multiple: int = 8) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def native_size(width: int, height: int, native_side: int, multiple: int = 8) -> tuple[int, int]:
    """The size with `width:height`'s aspect ratio and the area of a native_side² square."""
    scale = native_side / math.sqrt(width * height)
    return round_to_multiple(width * scale, multiple), round_to_multiple(height * scale, multiple)
