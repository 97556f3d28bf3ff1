"""Procedural pictures of flat shapes on simple backgrounds, with captions that describe them.

Everything is drawn from a `random.Random(seed)`, so a seed names the same picture and caption on
every machine. Positions and sizes are fractions of the picture side: a scene renders at any size.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

# Far apart in RGB so that a nearest-colour detector can name every pixel of a generated picture.
SHAPE_COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 220, 30),
    "orange": (245, 130, 20),
    "purple": (130, 40, 170),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# Two-tone backgrounds: (caption words, top colour, bottom colour).
SCENERY: dict[str, tuple[RGB, RGB]] = {
    "sky and grass": ((120, 190, 240), (70, 140, 40)),
    "sky and sand": ((120, 190, 240), (215, 185, 120)),
}
SHAPES = ("circle", "square", "triangle", "star")
# Drawn but never in the model's training data: what teaching it a new concept uses (concept.py).
NEW_SHAPES = ("cross",)
SIZES: dict[str, float] = {"small": 0.22, "large": 0.42}  # diameter / picture side
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
POSITION_WORDS = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
JITTER = 0.03  # random offset of a shape's centre, fraction of the side
MIN_COLOUR_DISTANCE = 90.0  # a shape must stand out from every background colour under it


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    position: str
    dx: float = 0.0
    dy: float = 0.0

    @property
    def centre(self) -> tuple[float, float]:
        x, y = POSITIONS[self.position]
        return x + self.dx, y + self.dy

    @property
    def radius(self) -> float:
        return SIZES[self.size] / 2


@dataclass(frozen=True)
class Background:
    """kind is "flat" (colours = (c,)), "gradient" (top to bottom) or "scenery" (name in SCENERY)."""

    kind: str
    colours: tuple[str, ...]

    @property
    def words(self) -> str:
        if self.kind == "flat":
            return f"{self.colours[0]} background"
        if self.kind == "gradient":
            return f"{self.colours[0]} to {self.colours[1]} gradient background"
        return f"{self.colours[0]} background"

    @property
    def ends(self) -> tuple[RGB, RGB]:
        """The colours at the top and at the bottom."""
        if self.kind == "scenery":
            return SCENERY[self.colours[0]]
        return SHAPE_COLOURS[self.colours[0]], SHAPE_COLOURS[self.colours[-1]]

    @property
    def rgb(self) -> list[RGB]:
        """Every colour that appears in the background, gradients sampled at nine points."""
        if self.kind != "gradient":
            return list(dict.fromkeys(self.ends))
        (r0, g0, b0), (r1, g1, b1) = self.ends
        return [
            (round(r0 + (r1 - r0) * t), round(g0 + (g1 - g0) * t), round(b0 + (b1 - b0) * t))
            for t in (i / 8 for i in range(9))
        ]

    @property
    def names(self) -> tuple[str, str]:
        """The colour names at the top and at the bottom of the picture."""
        if self.kind == "flat":
            return self.colours[0], self.colours[0]
        if self.kind == "gradient":
            return self.colours[0], self.colours[1]
        return "sky", self.colours[0].split()[-1]


@dataclass(frozen=True)
class Scene:
    background: Background
    shapes: tuple[Shape, ...] = field(default_factory=tuple)


def _distance(a: RGB, b: RGB) -> float:
    return math.dist(a, b)


def _overlaps(a: Shape, b: Shape, margin: float = 0.02) -> bool:
    (ax, ay), (bx, by) = a.centre, b.centre
    return math.hypot(ax - bx, ay - by) < a.radius + b.radius + margin


BACKGROUND_KINDS = ("flat", "gradient", "scenery")


def sample_background(rng: random.Random, kind: str | None = None) -> Background:
    """A background of the given kind, or flat 60%, gradient 20%, scenery 20% of the time."""
    if kind is None:
        roll = rng.random()
        kind = "flat" if roll < 0.6 else "gradient" if roll < 0.8 else "scenery"
    if kind == "flat":
        return Background("flat", (rng.choice(list(SHAPE_COLOURS)),))
    if kind == "gradient":
        top, bottom = rng.sample(list(SHAPE_COLOURS), 2)
        return Background("gradient", (top, bottom))
    if kind == "scenery":
        return Background("scenery", (rng.choice(list(SCENERY)),))
    raise ValueError(f"background kind: unknown {kind!r}, expected one of {BACKGROUND_KINDS}")


def sample_scene(
    rng: random.Random, max_shapes: int = 3, count: int | None = None, background_kind: str | None = None,
    background: Background | None = None,
) -> Scene:
    """`count` (default: one to `max_shapes`) shapes of distinct colours at distinct positions, on
    `background` or on one drawn (of `background_kind`, if given).

    Shapes do not overlap, and their colours stand apart from every background colour under them.
    """
    background = sample_background(rng, background_kind) if background is None else background
    colours = [
        name
        for name, rgb in SHAPE_COLOURS.items()
        if all(_distance(rgb, bg) > MIN_COLOUR_DISTANCE for bg in background.rgb)
    ]
    count = rng.randint(1, max_shapes) if count is None else count
    shapes: list[Shape] = []
    for _ in range(50):
        if len(shapes) == count:
            break
        used_colours = {s.colour for s in shapes}
        used_positions = {s.position for s in shapes}
        candidate = Shape(
            kind=rng.choice(SHAPES),
            colour=rng.choice([c for c in colours if c not in used_colours]),
            size=rng.choice(list(SIZES)),
            position=rng.choice([p for p in POSITIONS if p not in used_positions]),
            dx=rng.uniform(-JITTER, JITTER),
            dy=rng.uniform(-JITTER, JITTER),
        )
        if not any(_overlaps(candidate, s) for s in shapes):
            shapes.append(candidate)
    return Scene(background, tuple(shapes))


def scene_for_seed(seed: int, max_shapes: int = 3) -> Scene:
    return sample_scene(random.Random(seed), max_shapes)


def shape_words(shape: Shape, with_size: bool = True, with_position: bool = True) -> str:
    words = ["a"]
    if with_size:
        words.append(shape.size)
    words += [shape.colour, shape.kind]
    if with_position:
        words.append(POSITION_WORDS[shape.position])
    return " ".join(words)


def caption(scene: Scene) -> str:
    """The full description, e.g. "a large red circle on the left, blue background"."""
    return ", ".join([" and ".join(shape_words(s) for s in scene.shapes), scene.background.words])


def training_caption(scene: Scene, rng: random.Random) -> str:
    """A caption with parts sometimes left out, so partial prompts ("a red star") also work.

    About one in ten is empty: classifier-free guidance needs an unconditional model too.
    """
    if rng.random() < 0.1:
        return ""
    with_size = rng.random() > 0.15
    with_position = rng.random() > 0.15
    parts = [" and ".join(shape_words(s, with_size, with_position) for s in scene.shapes)]
    if rng.random() > 0.15:
        parts.append(scene.background.words)
    return ", ".join(parts)


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _cross(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """A plus sign: arms 0.6 r wide reaching 0.95 r from the centre."""
    h, a = 0.95 * r, 0.3 * r
    corners = [(a, h), (a, a), (h, a), (h, -a), (a, -a), (a, -h), (-a, -h), (-a, -a), (-h, -a), (-h, a),
               (-a, a), (-a, h)]
    return [(cx + x, cy + y) for x, y in corners]


def outline(shape: Shape, side: int) -> list[tuple[float, float]]:
    """The corners of the shape as drawn at `side` px (a circle's as a 32-gon), in drawing order."""
    cx, cy = (c * side for c in shape.centre)
    r = shape.radius * side
    if shape.kind == "circle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (i * math.pi / 16 for i in range(32))]
    if shape.kind == "square":
        h = r * 0.85  # same visual weight as a circle of radius r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape.kind == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape.kind == "star":
        return _star(cx, cy, r)
    if shape.kind == "cross":
        return _cross(cx, cy, r)
    raise ValueError(f"shape.kind: unknown shape {shape.kind!r}, expected one of {SHAPES + NEW_SHAPES}")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, side: int) -> None:
    fill = SHAPE_COLOURS[shape.colour]
    corners = outline(shape, side)
    if shape.kind in ("circle", "square"):  # drawn exactly, as the model's training pictures were
        xs, ys = [x for x, _ in corners], [y for _, y in corners]
        box = [min(xs), min(ys), max(xs), max(ys)]
        draw.ellipse(box, fill=fill) if shape.kind == "circle" else draw.rectangle(box, fill=fill)
    else:
        draw.polygon(corners, fill=fill)


def _background_pixels(background: Background, side: int) -> np.ndarray:
    if background.kind == "flat":
        return np.broadcast_to(np.array(SHAPE_COLOURS[background.colours[0]], np.float32), (side, side, 3))
    top, bottom = (np.array(c, np.float32) for c in background.ends)
    t = (np.arange(side, dtype=np.float32) + 0.5) / side
    if background.kind == "gradient":
        column = top[None] * (1 - t[:, None]) + bottom[None] * t[:, None]
    else:  # scenery: horizon at 60% of the height
        column = np.where(t[:, None] < 0.6, top[None], bottom[None])
    return np.broadcast_to(column[:, None, :], (side, side, 3))


def render(scene: Scene, side: int) -> Image.Image:
    """The scene as an RGB picture of side x side pixels, anti-aliased by drawing at twice the size."""
    big = 2 * side
    image = Image.fromarray(np.ascontiguousarray(_background_pixels(scene.background, big)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape, big)
    return image.resize((side, side), Image.Resampling.BOX)
