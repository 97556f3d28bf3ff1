"""Depth maps by Depth Anything (transformers' AutoModelForDepthEstimation), near white and far black,
as depth ControlNets read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from .folders import load_pretrained

MODEL_TYPES = frozenset({"depth_anything"})


class DepthModel:
    def __init__(self, processor: Any, model: Any):
        self.processor = processor
        self.model = model

    @classmethod
    def load(cls, folder: Path, device: torch.device, dtype: torch.dtype) -> DepthModel:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        return cls(*load_pretrained(AutoImageProcessor, AutoModelForDepthEstimation, folder, device, dtype))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """A depth map of `rgb` (8-bit RGB), of its size, in 8-bit RGB."""
        inputs = self.processor(images=PIL.Image.fromarray(rgb), return_tensors="pt")
        with torch.inference_mode():
            predicted = self.model(pixel_values=inputs["pixel_values"].to(self.model.device, self.model.dtype))
        height, width = rgb.shape[:2]
        depth = torch.nn.functional.interpolate(predicted.predicted_depth[:, None].float(), size=(height, width),
                                                mode="bicubic")[0, 0]
        low, high = depth.min(), depth.max()
        # Depth Anything predicts relative inverse depth: larger is nearer.
        scaled = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
        grey = (scaled * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return np.repeat(grey[..., None], 3, axis=-1)
