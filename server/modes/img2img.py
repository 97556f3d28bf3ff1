"""img2img: the request's image refined at a strength (0.75 unless the request says); the result
goes where the image came from on the canvas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import DiffusionPipeline

from .base import Encode, WholePicture


class Img2Img(WholePicture):
    name = "img2img"
    pipeline = "img2img"
    default_strength = 0.75

    def inputs(self, pipe: DiffusionPipeline, generators: Sequence[torch.Generator], encode: Encode) -> dict[str, Any]:
        return self.refine(self.start_picture(), encode, len(generators))
