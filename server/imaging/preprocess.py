"""Control images made from a picture (the `preprocess` request, docs/control.md): light lines on black,
as line ControlNets were trained on, by OpenCV alone (no weights to install).

canny      Canny's edges at OpenCV's usual thresholds (100, 200) on the grey picture.
softedge   the grey picture's gradient magnitude after a slight blur, scaled so the strongest 1%
           of edges are white: soft, continuous edges as HED/PiDiNet give.
scribble   soft edges made into bold strokes (thresholded, then thickened): what a quick sketch of
           the picture looks like.
lineart    the picture's dark lines: what is darker than its surroundings and thinner than 7 px
           (a morphological black-hat), as line art is drawn on paper, light on black; dark areas
           wider than a line are not lines.

Each takes and gives 8-bit RGB of the same size; the work is linear in the number of pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _rgb(lines: np.ndarray) -> np.ndarray:
    return np.repeat(lines[..., None], 3, axis=-1)


def canny(rgb: np.ndarray) -> np.ndarray:
    return _rgb(cv2.Canny(_grey(rgb), 100, 200))


def _edge_strength(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.GaussianBlur(_grey(rgb).astype(np.float32), (0, 0), 1.5)
    magnitude = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    top = float(np.percentile(magnitude, 99))
    return np.clip(magnitude / top, 0, 1) if top > 0 else np.zeros_like(magnitude)


def softedge(rgb: np.ndarray) -> np.ndarray:
    return _rgb(np.round(_edge_strength(rgb) * 255).astype(np.uint8))


def scribble(rgb: np.ndarray) -> np.ndarray:
    strokes = (_edge_strength(rgb) > 0.25).astype(np.uint8) * 255
    return _rgb(cv2.dilate(strokes, np.ones((3, 3), np.uint8)))


def lineart(rgb: np.ndarray) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    darker = cv2.morphologyEx(_grey(rgb), cv2.MORPH_BLACKHAT, kernel)
    # Tripled: a line a third as dark as black on white already reads as a full line.
    return _rgb(np.clip(darker.astype(np.uint16) * 3, 0, 255).astype(np.uint8))


PREPROCESSORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "canny": canny, "softedge": softedge, "scribble": scribble, "lineart": lineart,
}
