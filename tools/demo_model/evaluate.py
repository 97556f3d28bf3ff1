"""Measures whether the demo model draws what its prompt asks: `python -m tools.demo_model.evaluate`.

For each caption template it generates pictures of held-out random scenes, reads them back with
the pixel detector and counts how often each background colour, shape colour, position and size
is right. Writes bench/results/demo_model.json (and a picture grid beside it).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from server.models.demo import MODEL_DIR, NAME

from .data import Scene, caption, sample_scene
from .detect import SceneCheck, check

RESULTS = Path("bench/results/demo_model.json")
# (name, shape count, background kind)
TEMPLATES = (
    ("one shape, flat background", 1, "flat"),
    ("two shapes, flat background", 2, "flat"),
    ("three shapes, flat background", 3, "flat"),
    ("one shape, gradient background", 1, "gradient"),
    ("one shape, sky and ground", 1, "scenery"),
)
HELD_OUT_SEED = 1_000_003  # the training sets are drawn from seeds below 1000


@dataclass
class Tally:
    background: int = 0
    shape_colour: int = 0
    position: int = 0
    size: int = 0
    pictures: int = 0
    shapes: int = 0

    def add(self, result: SceneCheck) -> None:
        self.pictures += 1
        self.background += result.background_ok
        for shape in result.shapes:
            self.shapes += 1
            self.shape_colour += shape.colour_ok
            self.position += shape.position_ok
            self.size += shape.size_ok

    def merge(self, other: Tally) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def report(self) -> dict[str, float | int]:
        return {
            # one check per background and one per shape, pooled
            "colour_accuracy": round((self.background + self.shape_colour) / (self.pictures + self.shapes), 4),
            "background_accuracy": round(self.background / self.pictures, 4),
            "shape_colour_accuracy": round(self.shape_colour / self.shapes, 4),
            "position_accuracy": round(self.position / self.shapes, 4),
            "size_accuracy": round(self.size / self.shapes, 4),
            "pictures": self.pictures,
            "shapes": self.shapes,
        }


def load_pipeline(model_dir: Path = MODEL_DIR) -> StableDiffusionPipeline:
    pipeline = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate(pipeline: StableDiffusionPipeline, prompts: list[str], side: int, seed: int, steps: int,
             guidance: float) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(seed)
    return pipeline(prompts, height=side, width=side, num_inference_steps=steps, guidance_scale=guidance,
                    generator=generator).images


def held_out_scenes(count: int, shapes: int, background: str, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, count=shapes, background_kind=background) for _ in range(count)]


def seconds_per_step(pipeline: StableDiffusionPipeline, side: int, guidance: float) -> float:
    """One picture's denoising step with classifier-free guidance, VAE decode spread over 10 steps."""
    prompt = ["a large red circle on the left, blue background"]
    generate(pipeline, prompt, side, 0, 2, guidance)  # warm-up
    start = time.perf_counter()
    generate(pipeline, prompt, side, 0, 10, guidance)
    return round((time.perf_counter() - start) / 10, 4)


def evaluate(pipeline: StableDiffusionPipeline, per_template: int, sides: list[int], steps: int,
             guidance: float, seed: int = HELD_OUT_SEED, batch: int = 10) -> tuple[dict, list[Image.Image]]:
    results: dict = {}
    samples: list[Image.Image] = []
    for side in sides:
        overall = Tally()
        by_template = {}
        for index, (name, shapes, background) in enumerate(TEMPLATES):
            tally = Tally()
            scenes = held_out_scenes(per_template, shapes, background, seed + index)
            for start in range(0, len(scenes), batch):
                chunk = scenes[start : start + batch]
                images = generate(pipeline, [caption(s) for s in chunk], side, seed + start,
                                  steps, guidance)
                for scene, image in zip(chunk, images, strict=True):
                    tally.add(check(image, scene))
                if side == sides[0] and start == 0:
                    samples += images[:4]
            by_template[name] = tally.report()
            overall.merge(tally)
        results[str(side)] = {"overall": overall.report(), "templates": by_template}
    return results, samples


def folder_megabytes(folder: Path) -> dict[str, float]:
    sizes = {p.parent.name: round(p.stat().st_size / 1e6, 2) for p in folder.glob("*/*.safetensors")}
    return {**sizes, "total": round(sum(sizes.values()), 2)}


def grid(images: list[Image.Image], columns: int) -> Image.Image:
    side = images[0].width
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * side, rows * side), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * side, (i // columns) * side))
    return sheet


def hardware() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)"


def write_report(report: dict, samples: list[Image.Image], columns: int, output: Path) -> None:
    """The report as JSON, and a sheet of sample pictures beside it (same name, .png)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    grid(samples, columns).save(output.with_suffix(".png"))
    print(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--per-template", type=int, default=20)
    parser.add_argument("--sides", type=int, nargs="+", default=[128, 256, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED,
                        help="first seed of the scenes and noise; tune settings on another seed than you report")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    pipeline = load_pipeline(args.model_dir)
    started = time.monotonic()
    results, samples = evaluate(pipeline, args.per_template, args.sides, args.steps, args.guidance, args.seed)
    report = {
        "model": NAME,
        "what": "pictures per caption template, read back by tools/demo_model/detect.py",
        "targets": {"colour_accuracy": 0.9, "position_accuracy": 0.75},
        "settings": {"per_template": args.per_template, "steps": args.steps, "guidance": args.guidance,
                     "scheduler": type(pipeline.scheduler).__name__, "seed": args.seed},
        "results_by_side": results,
        "seconds_per_step_cpu": {str(side): seconds_per_step(pipeline, side, args.guidance)
                                 for side in (64, 128, 256)},
        "safetensors_mb": folder_megabytes(args.model_dir),
        "parameters_millions": {name: round(sum(p.numel() for p in getattr(pipeline, name).parameters()) / 1e6, 2)
                                for name in ("unet", "vae", "text_encoder")},
        "hardware": f"{platform.processor() or platform.machine()}, {args.threads} torch threads",
        "evaluation_minutes": round((time.monotonic() - started) / 60, 1),
    }
    write_report(report, samples, 10, args.output)


if __name__ == "__main__":
    main()
