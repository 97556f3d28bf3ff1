"""What the tests of a job's conditioning (controls, reference pictures) send: a 64 px canvas and selection,
a small seeded job in each mode, and a result's pixels."""

from __future__ import annotations

import uuid

import numpy as np

from shared.client import Client
from shared.messages import Generate, Image, Mask, Region

SIDE = 64


def canvas() -> Image:
    """White with a blue top half."""
    pixels = np.full((SIDE, SIDE, 4), 255, np.uint8)
    pixels[: SIDE // 2, :, :3] = (40, 90, 200)
    return Image(width=SIDE, height=SIDE, format="rgba8", data=pixels.tobytes())


def selection() -> Mask:
    """The middle square."""
    data = np.zeros((SIDE, SIDE), np.uint8)
    data[16:48, 16:48] = 255
    return Mask(width=SIDE, height=SIDE, format="a8", data=data.tobytes())


def request(**fields) -> Generate:
    """A 4-step txt2img job on the tiny SD1.5 model; `fields` override the defaults."""
    defaults = {"id": uuid.uuid4().hex, "mode": "txt2img", "model": "tiny-sd15", "prompt": "a red circle",
                "width": SIDE, "height": SIDE, "steps": 4, "seed": 3, "cfg_scale": 7.0}
    return Generate(**{**defaults, **fields})


def pixels(client: Client, **fields) -> np.ndarray:
    """The first picture of `request(**fields)`, as ints [height, width, 4]."""
    result = client.generate(request(**fields))
    image = result.images[0].image
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4).astype(int)


# The fields that make a job of each mode (and with regions, and on SDXL).
MODES = {
    "txt2img": {},
    "img2img": {"mode": "img2img", "image": canvas(), "strength": 0.75},
    "inpaint": {"mode": "inpaint", "image": canvas(), "mask": selection(), "strength": 1.0},
    "inpaint model": {"mode": "inpaint", "model": "tiny-sd15-inpaint", "image": canvas(), "mask": selection()},
    "regions": {"regions": [Region(mask=selection(), prompt="a green square")]},
    "sdxl": {"model": "tiny-sdxl"},
}
