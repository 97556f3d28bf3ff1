"""Finding an annotator in the models folders and loading it: transformers folders, safetensors only."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from ..headers import read_json

FOLDER = "annotators"
WEIGHTS = "model.safetensors"


def find(folders: Sequence[Path], model_types: Collection[str]) -> Path | None:
    """The first folder in the models folders' `annotators/` whose config is one of `model_types` and
    that has safetensors weights (a folder of pickled weights alone is passed over unopened)."""
    for root in folders:
        for base in (root / FOLDER, root / "models" / FOLDER):
            if not base.is_dir():
                continue
            for candidate in sorted(base.iterdir()):
                try:
                    config = read_json(candidate / "config.json")  # a regular file, within a size cap
                except (OSError, ValueError):
                    continue
                if config.get("model_type") in model_types and (candidate / WEIGHTS).is_file():
                    return candidate
    return None


def load_pretrained(processor_class: Any, model_class: Any, folder: Path, device: torch.device,
                    dtype: torch.dtype) -> tuple[Any, Any]:
    """`folder`'s image processor and model, on `device` in `dtype`, ready to run."""
    processor = processor_class.from_pretrained(folder, local_files_only=True)
    model = model_class.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    return processor, model.to(device, dtype).eval()
