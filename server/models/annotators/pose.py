"""Poses by ViTPose, top-down: each person's box is cut from the picture and the model finds COCO's 17
body keypoints in it. The boxes come from an RT-DETR detector where one is installed; without one, or
where it finds nobody, the whole picture is one box — an artist's pose reference is usually one figure,
and a drawn figure may be one a photo-trained detector misses.

transformers' PIL image processors are used: the others need torchvision, which the server does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from .folders import load_pretrained

POSE_MODEL_TYPES = frozenset({"vitpose"})
DETECTOR_MODEL_TYPES = frozenset({"rt_detr"})
COCO_KEYPOINTS = 17
# ViTPose+ models hold one head per dataset they were trained on; COCO's is the first.
COCO_DATASET = 0
# Boxes the detector is this sure of are people (the threshold of transformers' ViTPose example).
PERSON_THRESHOLD = 0.3
# Each person costs a pass of the pose model: the surest this many are posed.
MAX_PEOPLE = 16
# A box narrower or lower than this many pixels holds no pose to read.
MIN_BOX_SIDE = 4.0


class PersonDetector:
    """People's boxes in a picture, by RT-DETR (transformers' RTDetrForObjectDetection) trained on COCO."""

    def __init__(self, processor: Any, model: Any):
        self.processor = processor
        self.model = model
        person = model.config.label2id.get("person")
        if person is None:
            raise ValueError("it has no 'person' label: it is not a COCO detector")
        self.person = int(person)

    @classmethod
    def load(cls, folder: Path, device: torch.device, dtype: torch.dtype) -> PersonDetector:
        from transformers import RTDetrForObjectDetection, RTDetrImageProcessorPil

        return cls(*load_pretrained(RTDetrImageProcessorPil, RTDetrForObjectDetection, folder, device, dtype))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """The boxes (n, 4: x, y, width, height in pixels, COCO's order) of the people in `rgb`, surest
        first, at most MAX_PEOPLE, within the picture."""
        height, width = rgb.shape[:2]
        inputs = self.processor(images=PIL.Image.fromarray(rgb), return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.model.device, self.model.dtype))
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        (found,) = self.processor.post_process_object_detection(
            outputs, threshold=PERSON_THRESHOLD, target_sizes=[(height, width)],
            use_focal_loss=self.model.config.use_focal_loss)
        corners = found["boxes"][found["labels"] == self.person].cpu().numpy()  # sorted by score
        corners = np.clip(corners, 0, [width, height, width, height])
        boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
        return boxes[(boxes[:, 2:] >= MIN_BOX_SIDE).all(axis=1)][:MAX_PEOPLE]


class PoseModel:
    """COCO's 17 body keypoints of people in boxes, by ViTPose (transformers' VitPoseForPoseEstimation)."""

    def __init__(self, processor: Any, model: Any):
        self.processor = processor
        self.model = model
        if model.config.num_labels != COCO_KEYPOINTS:
            raise ValueError(f"it finds {model.config.num_labels} keypoints, not COCO's {COCO_KEYPOINTS}")
        self.experts = model.config.backbone_config.num_experts

    @classmethod
    def load(cls, folder: Path, device: torch.device, dtype: torch.dtype) -> PoseModel:
        from transformers import VitPoseForPoseEstimation, VitPoseImageProcessorPil

        return cls(*load_pretrained(VitPoseImageProcessorPil, VitPoseForPoseEstimation, folder, device, dtype))

    def __call__(self, rgb: np.ndarray, boxes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each box's person in `rgb`: its keypoints (17, 2: x, y in the picture's pixels) and their
        scores (17,), in COCO's order."""
        from transformers.models.vitpose.modeling_vitpose import VitPoseEstimatorOutput

        inputs = self.processor(images=PIL.Image.fromarray(rgb), boxes=[boxes], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        heads = {}
        if self.experts > 1:
            heads["dataset_index"] = torch.full((len(boxes),), COCO_DATASET, device=self.model.device)
        with torch.inference_mode():
            heatmaps = self.model(pixel_values=pixels, **heads).heatmaps.float().cpu()
        (people,) = self.processor.post_process_pose_estimation(VitPoseEstimatorOutput(heatmaps=heatmaps),
                                                                boxes=[boxes])
        return [(person["keypoints"].numpy(), person["scores"].reshape(-1).numpy()) for person in people]


def people(rgb: np.ndarray, estimator: PoseModel,
           detector: PersonDetector | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The keypoints and scores of each person in `rgb`: in the detector's boxes, else in the whole picture."""
    boxes = detector(rgb) if detector is not None else np.empty((0, 4), np.float32)
    if not len(boxes):
        height, width = rgb.shape[:2]
        boxes = np.array([[0, 0, width, height]], np.float32)
    return estimator(rgb, boxes)
