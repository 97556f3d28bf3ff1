"""txt2img: a picture from the prompt alone, at the requested size (or the model's native square)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import DiffusionPipeline

from .base import Encode, WholePicture


class Txt2Img(WholePicture):
    name = "txt2img"
    pipeline = "txt2img"

    def inputs(self, pipe: DiffusionPipeline, generators: Sequence[torch.Generator], encode: Encode) -> dict[str, Any]:
        if not self.model.is_inpaint_model:
            return {}
        # A 9-channel model has only its inpaint pipeline: it repaints a start picture whole.
        return self.refine(self.start_picture(), encode, len(generators))
