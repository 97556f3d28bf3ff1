"""The training pictures: decoded once, captioned, fitted to a bucket of their aspect ratio, mirrored
as augmentation, and encoded to latents once (per picture and flip) for every step after."""

from __future__ import annotations

import math
from dataclasses import dataclass

import PIL.Image
import PIL.ImageOps
import torch

from shared.training import Train, TrainingImage

from ..imaging import latents, payloads

SIDE_STEP = 64  # bucket sides are multiples of this (the VAE's 8 times the UNet's 8)
MAX_ASPECT = 4.0  # wider pictures are cropped to this


def caption(item: TrainingImage, kind: str, trigger: str) -> str:
    """The picture's own caption, else the trigger alone (embedding) or with a generic phrase (LoRA)."""
    if item.caption and item.caption.strip():
        return item.caption.strip()
    return trigger if kind == "embedding" else f"{trigger}, a picture"


def bucket(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The training size for a picture: its aspect ratio (capped at MAX_ASPECT), about resolution²
    pixels, sides multiples of SIDE_STEP."""
    aspect = min(max(width / height, 1 / MAX_ASPECT), MAX_ASPECT)
    w = max(SIDE_STEP, round(resolution * math.sqrt(aspect) / SIDE_STEP) * SIDE_STEP)
    h = max(SIDE_STEP, round(resolution / math.sqrt(aspect) / SIDE_STEP) * SIDE_STEP)
    return w, h


def fit(picture: PIL.Image.Image, size: tuple[int, int]) -> PIL.Image.Image:
    """Scaled to cover `size`, centre-cropped to it; transparency over white (how it shows in Krita
    over an empty canvas)."""
    return PIL.ImageOps.fit(payloads.flattened(picture), size, PIL.Image.Resampling.LANCZOS)


@dataclass
class Example:
    caption: str
    size: tuple[int, int]  # (width, height) of its bucket
    original: tuple[int, int]  # the picture's own (width, height): SDXL's size conditioning
    picture: PIL.Image.Image
    latents: list[torch.Tensor | None]  # [as is, mirrored], encoded on first use


def decode(request: Train) -> list[PIL.Image.Image]:
    """The request's pictures, RGBA; BadInput naming the picture whose data does not match its size."""
    return [payloads.to_pil(item.image, f"images[{i}].image") for i, item in enumerate(request.images)]


class Dataset:
    """The examples of one training, grouped by bucket; latents are cached on the examples."""

    def __init__(self, request: Train, pictures: list[PIL.Image.Image], resolution: int, flip: bool):
        self.flip = flip
        self.examples: list[Example] = []
        for item, picture in zip(request.images, pictures, strict=True):
            size = bucket(picture.width, picture.height, resolution)
            self.examples.append(Example(caption(item, request.kind, request.trigger), size, picture.size,
                                         fit(picture, size), [None, None]))
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for index, example in enumerate(self.examples):
            self.buckets.setdefault(example.size, []).append(index)

    def batch(self, size: int, generator: torch.Generator) -> list[tuple[Example, bool]]:
        """`size` examples of one bucket (chosen in proportion to its pictures), each maybe mirrored."""
        pick = int(torch.randint(len(self.examples), (1,), generator=generator))
        members = self.buckets[self.examples[pick].size]
        chosen = torch.randint(len(members), (size,), generator=generator).tolist()
        flips = torch.rand(size, generator=generator).tolist()
        return [(self.examples[members[i]], self.flip and f < 0.5) for i, f in zip(chosen, flips, strict=True)]

    @staticmethod
    def latents(pipe: object, example: Example, mirrored: bool) -> torch.Tensor:
        """The example's latents (1, C, h, w), encoded by the full VAE the first time."""
        cached = example.latents[int(mirrored)]
        if cached is None:
            picture = PIL.ImageOps.mirror(example.picture) if mirrored else example.picture
            cached = latents.encode(pipe, picture).float().cpu()
            example.latents[int(mirrored)] = cached
        return cached
