"""Teaches the demo model the concept of concept.py through the real server, as a LoRA or an
embedding, and measures what the trigger then paints: `python -m tools.demo_model.teach lora`.

A `train` with the ~20 pictures and their captions goes to a server on loopback (in this process,
so the process's CPU time is the training's); then `a zorp on a white background` is painted at
each held-out seed with the demo model's own settings and read back by the detector. Writes the
figures to bench/results/demo_concept.json and the first ten pictures of each row beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from server.config import ServerConfig
from server.imaging.payloads import from_pil
from server.models.demo import NAME
from shared.client import Client
from shared.messages import Generate, Result
from shared.training import Train, TrainingImage
from testing.serving import running_server, url

from .concept import HELD_OUT_SEEDS, PROMPT, TRIGGER, colour_dominant, concept_present, training_set
from .evaluate import grid

RESULTS = Path("bench/results/demo_concept.json")
SIDE = 128
PAINT = {"steps": 20, "cfg_scale": 3.0, "scheduler": "euler"}  # the demo model's recommended settings
# What the measured figures were trained with (docs/demo-model.md, "Teaching it a new concept").
SETTINGS: dict[str, dict[str, Any]] = {
    "lora": {"steps": 600, "learning_rate": 2e-3, "rank": 8, "batch_size": 8, "train_text_encoder": True},
    "embedding": {"steps": 1200, "learning_rate": 1e-2, "batch_size": 8},
}


def train_request(kind: str, **settings: Any) -> Train:
    """The concept's pictures and captions as a `train` of the demo model, under a new name."""
    images = [TrainingImage(image=from_pil(picture, "png"), caption=text) for picture, text in training_set()]
    name = f"{TRIGGER}-{uuid.uuid4().hex[:6]}"
    fields = {"resolution": SIDE, "seed": 0, "sample_every": 0, "checkpoint_every": 100_000, **settings}
    return Train(id=uuid.uuid4().hex, kind=kind, model=NAME, name=name, trigger=TRIGGER, images=images, **fields)


def teach(client: Client, kind: str, **settings: Any) -> tuple[Result, dict[str, float]]:
    """Train through `client`; returns the result and the wall and CPU minutes it took (CPU: this
    process's, which holds the server)."""
    started, cpu = time.monotonic(), time.process_time()
    result = client.train(train_request(kind, **settings), timeout=3600)
    return result, {"wall_minutes": round((time.monotonic() - started) / 60, 2),
                    "cpu_minutes": round((time.process_time() - cpu) / 60, 2)}


def prompt_for(result: Result) -> str:
    """The evaluation prompt for what `result` trained: with the LoRA's tag, or with the embedding's
    name (what a prompt writes to call one) for the trigger."""
    if result.info["kind"] == "lora":
        return f"{PROMPT} <lora:{result.name}:1>"
    return PROMPT.replace(TRIGGER, result.name)


def paint(client: Client, prompt: str, seeds: tuple[int, ...] = HELD_OUT_SEEDS) -> list[np.ndarray]:
    pictures = []
    for seed in seeds:
        request = Generate(id=uuid.uuid4().hex, mode="txt2img", model=NAME, prompt=prompt, width=SIDE, height=SIDE,
                           seed=seed, **PAINT)
        image = client.generate(request, timeout=600).images[0].image
        pictures.append(np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4)[..., :3])
    return pictures


def rates(pictures: list[np.ndarray]) -> dict[str, float]:
    """How often the concept (purple cross) is there, and how often purple dominates."""
    return {"concept_present": round(float(np.mean([concept_present(p) for p in pictures])), 3),
            "colour_dominant": round(float(np.mean([colour_dominant(p) for p in pictures])), 3)}


def demo_server(models: Path, outputs: Path) -> Any:
    """A server whose first models folder is empty: it serves the demo model and writes what it trains there."""
    return running_server(ServerConfig(models=[models], outputs=outputs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="+", choices=["lora", "embedding"])
    parser.add_argument("--steps", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--rank", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = {k: v for k in ("steps", "learning_rate", "rank", "batch_size") if (v := getattr(args, k)) is not None}
    report: dict[str, Any] = {"prompt": PROMPT, "held_out_seeds": len(HELD_OUT_SEEDS), "paint": PAINT,
                              "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        with demo_server(models, Path(tmp) / "out") as server, Client(url(server), name="teach") as client:
            sheets = measure(client, args.kinds, chosen, report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    Image.fromarray(np.vstack(sheets)).quantize(colors=256).save(args.output.with_suffix(".png"), optimize=True)
    print(json.dumps(report, indent=2))


def sheet(pictures: list[np.ndarray]) -> np.ndarray:
    """The first ten pictures side by side: one row of the figure."""
    return np.asarray(grid([Image.fromarray(p) for p in pictures[:10]], 10))


def measure(client: Client, kinds: list[str], chosen: dict[str, Any], report: dict[str, Any]) -> list[np.ndarray]:
    """Before, then after each kind of training: the rates into `report`; returns a row of pictures for each."""
    before = paint(client, PROMPT)
    report["before"] = rates(before)
    sheets = [sheet(before)]
    for kind in kinds:
        settings = {**SETTINGS[kind], **chosen}
        if kind == "embedding":
            settings.pop("rank", None)
        result, minutes = teach(client, kind, **settings)
        after = paint(client, prompt_for(result))
        report[kind] = {"settings": settings, **minutes, **rates(after)}
        sheets.append(sheet(after))
        print(json.dumps({kind: report[kind]}), flush=True)
    return sheets


if __name__ == "__main__":
    main()
