"""The OpenPose body picture that openpose ControlNets were trained on (lllyasviel's ControlNet 1.1
annotator, `draw_bodypose`), drawn from the COCO keypoints a pose estimator gives.

OpenPose's 18 body points are COCO's 17 in another order plus the neck, which COCO has not: it is the
midpoint of the shoulders, as OpenPose's own training data defines it. Each limb is a filled ellipse
4 px thick at a 512 px picture (in proportion at other sizes) in its own colour, the limbs dimmed to
60%, then each point a dot of radius 4 in full colour, on black. A point that scores under the
threshold is left out with every limb that touches it: a guessed elbow would pose the arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

# OpenPose's body points in its order, each as the COCO keypoint it is (None: the neck).
# OpenPose: nose, neck, right shoulder, elbow, wrist, left shoulder, elbow, wrist, right hip, knee,
# ankle, left hip, knee, ankle, right eye, left eye, right ear, left ear.
# COCO: nose, left eye, right eye, left ear, right ear, left shoulder, right shoulder, left elbow,
# right elbow, left wrist, right wrist, left hip, right hip, left knee, right knee, left ankle, right ankle.
FROM_COCO: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO_POINTS = 17
NECK = 1
COCO_SHOULDERS = (5, 6)

# OpenPose's limbs as pairs of its points, in its drawing order; limb i has COLOURS[i]. (OpenPose lists
# two more, ear to shoulder, which it does not draw.)
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
# Point i's colour, and limb i's (RGB).
COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
LIMB_SHADE = 0.6
# Sizes at a 512 px picture, what the ControlNets' training pictures were drawn at.
STICK_HALF_WIDTH = 4
DOT_RADIUS = 4
REFERENCE_SIDE = 512
THRESHOLD = 0.3


def openpose_points(keypoints: np.ndarray, scores: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """OpenPose's 18 body points (18, 2) from COCO's 17 `keypoints` (17, 2: x, y in pixels) and their
    `scores` (17,); NaN where a point scores under `threshold`, and the neck where a shoulder does."""
    if keypoints.shape != (COCO_POINTS, 2) or scores.shape != (COCO_POINTS,):
        raise ValueError(f"COCO keypoints are ({COCO_POINTS}, 2) with ({COCO_POINTS},) scores, "
                         f"not {keypoints.shape} with {scores.shape}")
    kept = np.where((scores >= threshold)[:, None] & np.isfinite(keypoints), keypoints, np.nan).astype(np.float64)
    left, right = COCO_SHOULDERS
    neck = (kept[left] + kept[right]) / 2  # NaN unless both shoulders are kept
    return np.stack([neck if coco is None else kept[coco] for coco in FROM_COCO])


def draw(height: int, width: int, people: Sequence[np.ndarray]) -> np.ndarray:
    """The OpenPose body picture (height, width, 3; 8-bit RGB) of `people`, each (18, 2) from
    `openpose_points`."""
    scale = min(height, width) / REFERENCE_SIDE
    half_width = max(1, round(STICK_HALF_WIDTH * scale))
    radius = max(1, round(DOT_RADIUS * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    for points in people:
        for (a, b), colour in zip(LIMBS, COLOURS, strict=False):
            if np.isnan(points[[a, b]]).any():
                continue
            (xa, ya), (xb, yb) = points[a], points[b]
            centre = (round((xa + xb) / 2), round((ya + yb) / 2))
            angle = round(math.degrees(math.atan2(yb - ya, xb - xa)))
            outline = cv2.ellipse2Poly(centre, (round(math.hypot(xb - xa, yb - ya) / 2), half_width), angle, 0, 360, 1)
            cv2.fillConvexPoly(canvas, outline, colour)
    canvas = (canvas * LIMB_SHADE).astype(np.uint8)
    for points in people:
        for (x, y), colour in zip(points, COLOURS, strict=True):
            if not np.isnan(x) and not np.isnan(y):
                cv2.circle(canvas, (round(x), round(y)), radius, colour, thickness=-1)
    return canvas
