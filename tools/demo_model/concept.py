"""A concept the demo model has never seen, to show that training teaches it one: "zorp", a purple cross.

The model was trained on circles, squares, triangles and stars (data.py): the cross is in none of
its pictures, and "zorp" is no word of its vocabulary (the tokenizer spells it z-or-p, tokens no
caption ever used). The colour is one it knows: its VAE, trained on the eight palette colours only,
cannot give back a colour outside them (a pink cross comes back a faint outline in greens and
browns, a cyan one blue), and a LoRA or an embedding does not train the VAE. `training_set` draws
the ~20 pictures an artist would bring; `concept_present` and `colour_dominant` are the verdicts on
what a prompt with the trigger then paints, over held-out noise seeds.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image

from .data import JITTER, POSITION_WORDS, POSITIONS, SHAPE_COLOURS, Background, Scene, Shape, render
from .detect import PALETTE, find_shape, name_map

TRIGGER = "zorp"
COLOUR, SHAPE = "purple", "cross"
PROMPT = f"a {TRIGGER} on a white background"
TRAINING_SEED = 20_000
HELD_OUT_SEEDS = tuple(range(1_000_000, 1_000_020))  # noise seeds of the evaluation pictures
WHITE_SHARE = 1 / 3  # of the training pictures are on white; the rest on other flat colours
# Backgrounds at least this far (RGB) from the concept's colour: the VAE blurs purple on blue.
CONTRAST = 150.0
MIN_COLOUR_SHARE = 0.02  # of the picture: less purple than this is no zorp at all


def training_scene(rng: random.Random) -> Scene:
    """One zorp, large two times in three and in the centre one time in two, elsewhere at a random
    place, on white or another flat colour."""
    if rng.random() < WHITE_SHARE:
        background = "white"
    else:
        background = rng.choice([name for name, rgb in SHAPE_COLOURS.items()
                                 if name != "white" and math.dist(rgb, SHAPE_COLOURS[COLOUR]) > CONTRAST])
    size = "small" if rng.random() < 1 / 3 else "large"
    position = "center" if rng.random() < 1 / 2 else rng.choice([p for p in POSITIONS if p != "center"])
    shape = Shape(SHAPE, COLOUR, size, position, rng.uniform(-JITTER, JITTER), rng.uniform(-JITTER, JITTER))
    return Scene(Background("flat", (background,)), (shape,))


def training_caption(scene: Scene) -> str:
    """The scene as an artist would caption it, the trigger standing for colour and shape and, left
    alone, for a large one in the centre: "a small zorp on the left on a blue background"."""
    shape = scene.shapes[0]
    words = ["a", "small" if shape.size == "small" else "", TRIGGER,
             "" if shape.position == "center" else POSITION_WORDS[shape.position], "on a", scene.background.words]
    return " ".join(w for w in words if w)


def training_set(count: int = 20, side: int = 128, seed: int = TRAINING_SEED) -> list[tuple[Image.Image, str]]:
    """`count` pictures of the concept with their captions; the same on every machine for a seed."""
    rng = random.Random(seed)
    scenes = [training_scene(rng) for _ in range(count)]
    return [(render(scene, side), training_caption(scene)) for scene in scenes]


def concept_present(image: Image.Image | np.ndarray) -> bool:
    """A purple region of some size that looks like a cross."""
    found = find_shape(image, COLOUR)
    return found is not None and found[0].area >= MIN_COLOUR_SHARE and found[1] == SHAPE


def colour_dominant(image: Image.Image | np.ndarray, background: str = "white") -> bool:
    """Purple covers more of the picture than any other named colour but the background's, and at
    least MIN_COLOUR_SHARE of it."""
    names = name_map(image)
    counts = np.bincount(names[names >= 0].ravel(), minlength=len(PALETTE))
    shares = {name: counts[i] / names.size for i, name in enumerate(PALETTE) if name != background}
    return shares[COLOUR] >= MIN_COLOUR_SHARE and max(shares, key=shares.__getitem__) == COLOUR
