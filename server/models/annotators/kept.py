"""The server's annotators: each found in the models folders when asked for, loaded on first use and
kept until another folder is found first. One runs at a time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ModelBroken, Unsupported
from . import depth
from .folders import FOLDER, find

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Annotator:
    name: str  # as the artist reads it in an error
    model_types: Collection[str]
    load: Callable[[Path, torch.device, torch.dtype], Any]
    example: str  # what to install


DEPTH = Annotator("depth model", depth.MODEL_TYPES, depth.DepthModel.load, "Depth Anything")


class Annotators:
    """Each method gives a control image of the picture's size (8-bit RGB) and what made it, for the
    result's info."""

    def __init__(self, folders: Sequence[Path], device: torch.device, dtype: torch.dtype):
        self.folders = folders
        self.device = device
        self.dtype = dtype
        self._kept: dict[Annotator, tuple[Path, Any]] = {}
        self._lock = threading.Lock()

    def depth(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """A depth map: near is white, far black."""
        with self._lock:
            folder, model = self._required(DEPTH)
            return model(rgb), {"model": folder.name}

    def _required(self, annotator: Annotator) -> tuple[Path, Any]:
        found = self._found(annotator)
        if found is None:
            raise Unsupported(f"no {annotator.name} is installed: place {annotator.example} (a transformers folder "
                              f"with model.safetensors) in {FOLDER}/ of a models folder", "kind")
        return found

    def _found(self, annotator: Annotator) -> tuple[Path, Any] | None:
        """The installed `annotator`'s folder and model, loaded if it is not kept; None where none is installed."""
        folder = find(self.folders, annotator.model_types)
        if folder is None:
            return None
        kept = self._kept.get(annotator)
        if kept is None or kept[0] != folder:
            log.info("loading %s %s", annotator.name, folder.name)
            try:
                model = annotator.load(folder, self.device, self.dtype)
            except Exception as exc:
                raise ModelBroken(f"{annotator.name} {folder.name} cannot be loaded: {exc}", "kind") from exc
            kept = self._kept[annotator] = (folder, model)
        return kept
