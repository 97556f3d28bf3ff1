"""A training's state folder under the server's outputs: the request and its pictures, written when
the job is accepted, and its latest checkpoint. A server that starts finds the unfinished trainings
here and resumes each from its checkpoint. Tensors go into safetensors files, everything else into
JSON: nothing is ever unpickled."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from safetensors import safe_open

from shared.messages import Image
from shared.training import Train, TrainingImage

from ..errors import BadInput
from . import files

log = logging.getLogger(__name__)

REQUEST = "request.json"
CHECKPOINT = "checkpoint.safetensors"
STATE_KEY = "underpaint.training"


def root(outputs: Path) -> Path:
    return outputs / "training"


def folder_for(outputs: Path, request: Train) -> Path:
    """One folder per (kind, name): a second training of the same name while one runs is refused."""
    digest = hashlib.sha1(f"{request.kind}\0{request.name}".encode()).hexdigest()[:16]
    return root(outputs) / f"{request.kind}-{digest}"


def create(outputs: Path, request: Train, pictures: list[PIL.Image.Image]) -> Path:
    """The state folder of a new training, with its request and pictures; BadInput (field name) when a
    training of that name is already under way."""
    folder = folder_for(outputs, request)
    root(outputs).mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        raise BadInput(f"name {request.name!r}: a training of that name is already under way", "name") from None
    try:
        fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name != "images"}
        fields["captions"] = [item.caption for item in request.images]
        for i, picture in enumerate(pictures):
            picture.save(folder / f"image-{i:03d}.png", format="PNG", compress_level=1)
        (folder / REQUEST).write_text(json.dumps(fields), encoding="utf-8")  # last: marks the folder complete
    except Exception:
        remove(folder)
        raise
    return folder


def load_request(folder: Path) -> Train:
    fields = json.loads((folder / REQUEST).read_text(encoding="utf-8"))
    captions = fields.pop("captions")
    images = []
    for i, caption in enumerate(captions):
        data = (folder / f"image-{i:03d}.png").read_bytes()
        with PIL.Image.open(io.BytesIO(data)) as picture:
            size = picture.size
        images.append(TrainingImage(image=Image(width=size[0], height=size[1], format="png", data=data),
                                    caption=caption))
    return Train(**fields, images=images)


def unfinished(outputs: Path) -> list[Path]:
    """The state folders of trainings a previous server left unfinished, oldest first."""
    base = root(outputs)
    if not base.is_dir():
        return []
    found = [f for f in base.iterdir() if (f / REQUEST).is_file()]
    return sorted(found, key=lambda f: (f / REQUEST).stat().st_mtime_ns)


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Checkpoint:
    step: int
    adapter: dict[str, torch.Tensor]  # the method's state()
    optimizer: dict[str, Any]  # torch.optim state_dict
    rng: torch.Tensor  # the training generator's state


def save(folder: Path, checkpoint: Checkpoint) -> None:
    tensors = {f"adapter.{k}": v for k, v in checkpoint.adapter.items()}
    state = checkpoint.optimizer["state"]
    for index, values in state.items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
    tensors["rng"] = checkpoint.rng
    header = {"step": checkpoint.step, "param_groups": checkpoint.optimizer["param_groups"]}
    files.write(folder / CHECKPOINT, tensors, {STATE_KEY: json.dumps(header)})


def load(folder: Path) -> Checkpoint | None:
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as source:
        header = json.loads(source.metadata()[STATE_KEY])
        tensors = {key: source.get_tensor(key) for key in source.keys()}
    adapter = {k.removeprefix("adapter."): v for k, v in tensors.items() if k.startswith("adapter.")}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return Checkpoint(step=header["step"], adapter=adapter,
                      optimizer={"state": state, "param_groups": header["param_groups"]}, rng=tensors["rng"])
