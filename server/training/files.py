"""The trained model's file: where it goes, what its header says, and writing it atomically.

The file name comes from the request's validated `name` alone (shared/training.py allows letters,
digits, spaces, '-', '_' and '.'), never from a path a client sent; it goes into the first models
folder's `loras/` or `embeddings/`, where the registry finds it at once.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from shared.training import Train

from ..errors import BadInput
from ..models.entry import ModelEntry
from ..models.registry import Registry
from . import embedding, lora
from .defaults import Settings

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
          torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
SUBFOLDER = {"lora": "loras", "embedding": "embeddings"}
SUFFIX = ".safetensors"


def target(models: Path, request: Train) -> Path:
    return models / SUBFOLDER[request.kind] / f"{request.name}{SUFFIX}"


def check_free(registry: Registry, models: Path, request: Train) -> None:
    """BadInput (field name) when a LoRA or embedding of that name is listed or its file exists."""
    taken = any(e.kind == request.kind and e.name == request.name for e in registry.entries())
    if taken or target(models, request).exists():
        raise BadInput(f"name {request.name!r}: there is already a {request.kind} of that name; choose another",
                       "name")


def metadata(request: Train, entry: ModelEntry, settings: Settings, step: int, images: int,
             captions: list[str], extra: dict[str, Any]) -> dict[str, str]:
    """kohya-style `ss_*` keys (what A1111's and ComfyUI's model browsers show) and the trigger as
    modelspec's trigger phrase (what the registry lists as trigger words)."""
    tags: dict[str, int] = {}
    for text in captions:
        for tag in (t.strip() for t in text.split(",")):
            if tag:
                tags[tag] = tags.get(tag, 0) + 1
    fields: dict[str, Any] = {
        "ss_base_model": entry.family,
        "ss_base_model_version": {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}.get(entry.family or ""),
        "ss_sd_model_name": entry.name,
        "ss_network_module": "networks.lora" if request.kind == "lora" else None,
        "ss_network_dim": settings.rank if request.kind == "lora" else None,
        "ss_network_alpha": settings.rank if request.kind == "lora" else None,
        "ss_learning_rate": settings.learning_rate,
        "ss_steps": step,
        "ss_max_train_steps": settings.steps,
        "ss_num_train_images": images,
        "ss_resolution": f"({settings.resolution}, {settings.resolution})",
        "ss_batch_size_per_device": settings.batch_size,
        "ss_seed": request.seed,
        "ss_flip_aug": request.flip,
        "ss_text_encoder_lr": settings.learning_rate if settings.train_text_encoder else None,
        "ss_num_vectors": settings.vectors if request.kind == "embedding" else None,
        "ss_trigger": request.trigger,
        "ss_tag_frequency": json.dumps({request.name: tags}),
        "ss_output_name": request.name,
        "modelspec.trigger_phrase": request.trigger,
        "modelspec.title": request.name,
        **extra,
    }
    return {k: str(v) for k, v in fields.items() if v is not None}


def tensors(kind: str, state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    return (lora.export if kind == "lora" else embedding.export)(state, family)


def write(path: Path, content: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    """Written under a hidden temporary name, then renamed: a scan never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as out:
            for chunk in serialize(content, meta or {}):
                out.write(chunk)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def serialize(content: dict[str, torch.Tensor], meta: dict[str, str]) -> list[bytes]:
    """The safetensors layout with its header's keys sorted: the same tensors and metadata give the same
    bytes (the library's writer orders the metadata differently from one call to the next)."""
    header: dict[str, Any] = {"__metadata__": meta} if meta else {}
    data, offset = [], 0
    for name in sorted(content):
        tensor = content[name].detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        data.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the tensors' data starts 8-byte aligned
    return [struct.pack("<Q", len(text)), text, *data]
