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
from ...imaging import skeleton
from . import depth, pose
from .folders import FOLDER, find

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Annotator:
    name: str  # as the artist reads it in an error
    model_types: Collection[str]
    load: Callable[[Path, torch.device, torch.dtype], Any]
    example: str  # what to install


DEPTH = Annotator("depth model", depth.MODEL_TYPES, depth.DepthModel.load, "Depth Anything")
POSE = Annotator("pose model", pose.POSE_MODEL_TYPES, pose.PoseModel.load, "ViTPose")
PERSON_DETECTOR = Annotator("person detector", pose.DETECTOR_MODEL_TYPES, pose.PersonDetector.load, "RT-DETR")


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

    def pose(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """The OpenPose picture of the people in `rgb` (imaging/skeleton.py): black where nobody is."""
        height, width = rgb.shape[:2]
        with self._lock:
            folder, estimator = self._required(POSE)
            detector = self._found(PERSON_DETECTOR)
            found = pose.people(rgb, estimator, detector[1] if detector else None)
        people = [skeleton.openpose_points(keypoints, scores) for keypoints, scores in found]
        posed = [points for points in people if not np.isnan(points).all()]
        info = {"model": folder.name, "detector": detector[0].name if detector else None, "people": len(posed)}
        return skeleton.draw(height, width, posed), info

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
