"""Models that make control images from pictures (annotators): Depth Anything for depth maps.

They are found in `annotators/` of each models folder (also under `models/`), as transformers folders:
config.json, model.safetensors and preprocessor_config.json, which the installer or the artist places
there (docs/control.md). Only safetensors weights are loaded. The one found first is loaded on first
use and kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from ..errors import ModelBroken, Unsupported
from .headers import read_json

log = logging.getLogger(__name__)

FOLDER = "annotators"
DEPTH_MODEL_TYPES = frozenset({"depth_anything"})


def find_depth_model(folders: Sequence[Path]) -> Path | None:
    """The first Depth Anything folder in the models folders' `annotators/`."""
    for root in folders:
        for base in (root / FOLDER, root / "models" / FOLDER):
            if not base.is_dir():
                continue
            for candidate in sorted(base.iterdir()):
                try:
                    config = read_json(candidate / "config.json")  # a regular file, within a size cap
                except (OSError, ValueError):
                    continue
                if config.get("model_type") in DEPTH_MODEL_TYPES and (candidate / "model.safetensors").is_file():
                    return candidate
    return None


class Annotators:
    def __init__(self, folders: Sequence[Path], device: torch.device, dtype: torch.dtype):
        self.folders = folders
        self.device = device
        self.dtype = dtype
        self._depth: tuple[Path, Any, Any] | None = None  # folder, image processor, model
        self._lock = threading.Lock()

    def depth(self, rgb: np.ndarray) -> np.ndarray:
        """A depth map of `rgb` (8-bit RGB): near is white, far black, as depth ControlNets read it."""
        with self._lock:
            processor, model = self._depth_model()
            inputs = processor(images=PIL.Image.fromarray(rgb), return_tensors="pt")
            with torch.inference_mode():
                predicted = model(pixel_values=inputs["pixel_values"].to(self.device, model.dtype)).predicted_depth
        height, width = rgb.shape[:2]
        depth = torch.nn.functional.interpolate(predicted[:, None].float(), size=(height, width), mode="bicubic")[0, 0]
        low, high = depth.min(), depth.max()
        # Depth Anything predicts relative inverse depth: larger is nearer.
        scaled = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
        grey = (scaled * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return np.repeat(grey[..., None], 3, axis=-1)

    def _depth_model(self) -> tuple[Any, Any]:
        folder = find_depth_model(self.folders)
        if folder is None:
            raise Unsupported("no depth model is installed: place Depth Anything (a transformers folder) in "
                              f"{FOLDER}/ of a models folder", "kind")
        if self._depth is None or self._depth[0] != folder:
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation

            log.info("loading depth model %s", folder.name)
            try:
                processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
                model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True,
                                                                    use_safetensors=True)
            except Exception as exc:
                raise ModelBroken(f"depth model {folder.name} cannot be loaded: {exc}", "kind") from exc
            self._depth = (folder, processor, model.to(self.device, self.dtype).eval())
        return self._depth[1], self._depth[2]
