"""Reads back what a picture shows, by pixel statistics: background colours and coloured blobs.

Good enough for pictures of flat shapes in the demo palette, and for checking what a generation put
where; not a general-purpose detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .data import POSITIONS, SCENERY, SHAPE_COLOURS, SIZES, Scene, Shape

# Shape colours plus the scenery's own tones, named by their last caption word ("sky", "grass").
PALETTE: dict[str, tuple[int, int, int]] = dict(SHAPE_COLOURS)
for _name, (_top, _bottom) in SCENERY.items():
    PALETTE["sky"] = _top
    PALETTE[_name.split()[-1]] = _bottom
_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], np.float32)

MAX_DISTANCE = 80.0  # farther than this from every palette colour: a pixel has no name
MIN_AREA = 0.004  # of the picture: smaller blobs are noise, the smallest star is about 0.016
BAND = 0.1  # height of the top and bottom bands whose median names the background
# area / radius^2 of each shape as drawn, to turn a blob's area into a size word
_AREA_FACTOR = {"circle": np.pi, "square": 4 * 0.85**2, "triangle": 1.71, "star": 1.32, "cross": 1.92}
# A shape with arms (star, cross) fills less of its convex hull than this; circles, squares and
# triangles fill all of it. As drawn: star 0.55, cross 0.69, the others 0.97 and more; the demo
# model's crosses 0.52-0.65, its lumpy blobs 0.68 and more.
ARMS_SOLIDITY = 0.75
# A gap between the region and its convex hull counts as one between two arms when larger than this
# fraction of the region: as drawn, each is 11% (cross) or 16% (star); in the demo model's crosses
# the fourth largest is 9% or more, the fifth 5% or less.
NOTCH_AREA = 0.07
# Filled fraction of the bounding box, as drawn: triangle 0.5, circle 0.79, square 1.
_SIZE_THRESHOLD = (SIZES["small"] + SIZES["large"]) / 4  # radius halfway between small and large


@dataclass(frozen=True)
class Blob:
    colour: str
    area: float  # fraction of the picture
    x: float  # centroid, fraction of the width
    y: float

    @property
    def position(self) -> str:
        return min(POSITIONS, key=lambda p: (POSITIONS[p][0] - self.x) ** 2 + (POSITIONS[p][1] - self.y) ** 2)

    def size(self, kind: str) -> str:
        radius = np.sqrt(self.area / _AREA_FACTOR[kind])
        return "small" if radius < _SIZE_THRESHOLD else "large"


def _pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image: expected an RGB picture (H x W x 3), got shape {array.shape}")
    return array.astype(np.float32)


def nearest_name(rgb: np.ndarray) -> str | None:
    distances = np.linalg.norm(_RGB - rgb, axis=-1)
    best = int(distances.argmin())
    return _NAMES[best] if distances[best] <= MAX_DISTANCE else None


def name_map(image: Image.Image | np.ndarray) -> np.ndarray:
    """Index into PALETTE of each pixel's nearest colour, -1 where none is near."""
    pixels = _pixels(image)
    distances = np.linalg.norm(pixels[:, :, None, :] - _RGB[None, None], axis=-1)
    names = distances.argmin(axis=-1)
    names[distances.min(axis=-1) > MAX_DISTANCE] = -1
    return names


def colour_share(image: Image.Image | np.ndarray, colour: str) -> float:
    """The fraction of pixels whose nearest palette colour is `colour`."""
    return float((name_map(image) == _palette_index(colour)).mean())


def _palette_index(colour: str) -> int:
    if colour not in PALETTE:
        raise ValueError(f"colour: unknown {colour!r}, expected one of {_NAMES}")
    return _NAMES.index(colour)


def background_names(image: Image.Image | np.ndarray) -> tuple[str | None, str | None]:
    """Colour names of the top and bottom bands (median pixel, so a shape in a band is ignored)."""
    pixels = _pixels(image)
    band = max(1, round(BAND * pixels.shape[0]))
    top = np.median(pixels[:band].reshape(-1, 3), axis=0)
    bottom = np.median(pixels[-band:].reshape(-1, 3), axis=0)
    return nearest_name(top), nearest_name(bottom)


def _largest_region(image: Image.Image | np.ndarray, colour: str,
                    names: np.ndarray | None) -> tuple[Blob, np.ndarray] | None:
    """The largest connected region of `colour` and its mask, or None if it covers less than MIN_AREA."""
    index = _palette_index(colour)
    names = name_map(image) if names is None else names
    mask = (names == index).astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    height, width = mask.shape
    area = stats[largest, cv2.CC_STAT_AREA] / (height * width)
    if area < MIN_AREA:
        return None
    x, y = centroids[largest]
    blob = Blob(colour, float(area), float((x + 0.5) / width), float((y + 0.5) / height))
    return blob, (labels == largest).astype(np.uint8)


def find_blob(image: Image.Image | np.ndarray, colour: str, names: np.ndarray | None = None) -> Blob | None:
    """The largest connected region of `colour`, or None if it covers less than MIN_AREA."""
    found = _largest_region(image, colour, names)
    return None if found is None else found[0]


def outline_shape(mask: np.ndarray) -> str:
    """Which drawn shape a filled region looks like: "cross" when it has four arms, "star" when five
    or more, else "triangle", "circle" or "square" by how much of its bounding box it fills."""
    mask = mask.astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = np.zeros_like(mask)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.concatenate(contours)), 1)
    area = float(mask.sum())
    if area / max(float(hull.sum()), 1.0) < ARMS_SOLIDITY:
        notches = (hull > mask).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(notches, connectivity=4)
        arms = int((stats[1:, cv2.CC_STAT_AREA] > NOTCH_AREA * area).sum())
        if arms >= 4:
            return "cross" if arms == 4 else "star"
    _, _, width, height = cv2.boundingRect(mask)
    extent = area / (width * height)
    return "triangle" if extent < 0.65 else "circle" if extent < 0.9 else "square"


def find_shape(image: Image.Image | np.ndarray, colour: str,
               names: np.ndarray | None = None) -> tuple[Blob, str] | None:
    """The largest region of `colour` and the shape it looks like, or None where there is none."""
    found = _largest_region(image, colour, names)
    return None if found is None else (found[0], outline_shape(found[1]))


@dataclass(frozen=True)
class ShapeCheck:
    shape: Shape
    blob: Blob | None

    @property
    def colour_ok(self) -> bool:
        return self.blob is not None

    @property
    def position_ok(self) -> bool:
        return self.blob is not None and self.blob.position == self.shape.position

    @property
    def size_ok(self) -> bool:
        return self.blob is not None and self.blob.size(self.shape.kind) == self.shape.size


@dataclass(frozen=True)
class SceneCheck:
    background_expected: tuple[str, str]
    background_found: tuple[str | None, str | None]
    shapes: tuple[ShapeCheck, ...]

    @property
    def background_ok(self) -> bool:
        return self.background_expected == self.background_found


def check(image: Image.Image | np.ndarray, scene: Scene) -> SceneCheck:
    """Does the picture show the scene's background colours, and each shape's colour where and as
    large as the scene says?"""
    names = name_map(image)
    shapes = tuple(ShapeCheck(shape, find_blob(image, shape.colour, names)) for shape in scene.shapes)
    return SceneCheck(scene.background.names, background_names(image), shapes)
