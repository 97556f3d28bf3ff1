"""Training requests for tests and benchmarks: small pictures of flat colour and a tiny `train`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import PIL.Image
from safetensors import safe_open

from server.imaging.payloads import from_pil
from shared.client import Client
from shared.messages import Cancelled, Error, Result
from shared.training import Train, TrainingImage

TRIGGER = "zqxtoy"


def pictures(count: int = 3) -> list[TrainingImage]:
    """`count` pictures of different colours and aspect ratios, as PNG; every other one captioned."""
    items = []
    for i in range(count):
        picture = PIL.Image.new("RGBA", (64 + 32 * (i % 2), 64), (40 + 60 * i, 200 - 50 * i, 90, 255))
        caption = f"{TRIGGER}, a flat square" if i % 2 else None
        items.append(TrainingImage(image=from_pil(picture, "png"), caption=caption))
    return items


def train_request(**fields) -> Train:
    """A few steps of a LoRA on the tiny SD1.5 model at 64 px; `fields` override the defaults."""
    defaults = {"id": uuid.uuid4().hex, "kind": "lora", "model": "tiny-sd15", "name": f"toy-{uuid.uuid4().hex[:8]}",
                "trigger": TRIGGER, "images": pictures(), "steps": 3, "resolution": 64, "seed": 7,
                "sample_every": 0, "checkpoint_every": 1000, "learning_rate": 1e-2}
    return Train(**{**defaults, **fields})


def header(path: Path) -> tuple[list[str], dict[str, str]]:
    """The tensor names and the metadata of a safetensors file."""
    with safe_open(str(path), framework="pt") as source:
        return sorted(source.keys()), source.metadata() or {}


def outcome(client: Client, job_id: str, timeout: float = 300, seen: list | None = None) -> Any:
    """The terminal message (result, cancelled or error) of job `job_id`; what came before goes to `seen`."""
    for message in client.messages(timeout=timeout):
        if getattr(message, "id", None) == job_id and isinstance(message, (Result, Cancelled, Error)):
            return message
        if seen is not None:
            seen.append(message)
    raise AssertionError("unreachable")
