"""A refined picture with the large-scale colours and shapes of the picture it started from.

Refining an enlarged picture at its full size is meant to add what the enlargement lacks, detail
finer than the picture it was enlarged from, not to move or recolour what is there: each tile of a
large refine sees only part of the picture, and models drift in colour at sizes beyond their own.
So the result keeps the start picture's frequencies up to the size it was enlarged from and the
refine's above it (the colour fix of tiled super-resolution, as StableSR's wavelet fix does).
docs/upscale.md has the measurements.
"""

from __future__ import annotations

import cv2
import numpy as np
import PIL.Image

# Rows summed at a time in 16 bits.
BAND = 256


def keep_coarse(refined: PIL.Image.Image, start: PIL.Image.Image, coarse: tuple[int, int]) -> PIL.Image.Image:
    """`refined` with `start`'s content at the `coarse` size (width, height) and below: both taken down
    to `coarse` by area averaging and back up smoothly, the difference added to `refined`. All three
    are RGB; `refined` and `start` have one size. Besides the two pictures, three 8-bit arrays of the
    full size are held, and 16-bit sums a band of rows at a time."""
    size = refined.size

    def low(picture: PIL.Image.Image) -> np.ndarray:
        small = cv2.resize(np.asarray(picture), coarse, interpolation=cv2.INTER_AREA)
        return cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)

    start_low, refined_low = low(start), low(refined)
    levels = np.asarray(refined).copy()
    for top in range(0, size[1], BAND):
        rows = slice(top, top + BAND)
        fixed = levels[rows].astype(np.int16)
        fixed += start_low[rows]
        fixed -= refined_low[rows]
        levels[rows] = np.clip(fixed, 0, 255)
    del start_low, refined_low
    return PIL.Image.fromarray(levels)
