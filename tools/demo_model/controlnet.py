"""Trains the demo model's scribble ControlNet: `python -m tools.demo_model.controlnet [STAGE]`.

A diffusers `ControlNetModel` copied from the demo UNet's encoder learns to put a shape where a quick
sketch of its outline lies, while the prompt still says its colour, kind and background:

1. data      a fixed set of one-shape scenes at 64 and 128 px, encoded once by the demo VAE. Each
             training step draws a fresh sketch of each scene's shape (`sketch`), so the ControlNet
             sees many hands.
2. train     the ControlNet learns the demo UNet's objective (v-prediction on its noise schedule)
             with the UNet and text encoder frozen; captions name the colour, kind and background
             but never the position, which only the sketch tells. Every --eval-every steps a quick
             check on validation scenes logs how often the shape lands on its sketch. Checkpoints
             as it goes; a rerun resumes, a larger --steps goes on.
3. export    writes the diffusers folder the server lists beside the demo model
             (server/models/demo/controlnet/underpaint-demo-scribble/), in float16.
4. evaluate  held-out scenes through the demo pipeline with the server's control wrapper, read by
             tools/demo_model/detect.py: the shape's centroid within POSITION_TOLERANCE of the
             sketch's, with control, without (chance) and ending at half the steps; the shape's
             colour; strength 0 against no control, pixel for pixel. Writes
             bench/results/demo_controlnet.json.

`all` runs 1 to 3. Every stage is seeded. docs/demo-model.md gives the figures and the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image, ImageDraw

from server.conditioning.control import ActiveControl, Controls, applied, line_picture
from server.models.demo import CONTROLNET_DIR

from .addon_training import Draw, resume, save_state, train_steps
from .data import Scene, Shape, outline, render, sample_scene
from .detect import find_blob
from .evaluate import HELD_OUT_SEED, hardware, load_pipeline, write_report
from .train import to_tensor, tokenize

log = logging.getLogger("underpaint.demo.controlnet")

NAME = "underpaint-demo-scribble"
RESULTS = Path("bench/results/demo_controlnet.json")
# The hint is brought to the latent size (1/8) by three stride-2 convolutions; few channels keep the
# ControlNet small, as a sketch of one outline carries little.
HINT_CHANNELS = (16, 32, 64, 128)
POSITION_TOLERANCE = 0.1  # of the side: how far the shape's centroid may lie from the sketch's
VALIDATION_SEED = 2_000_003  # the quick checks during training; the report uses HELD_OUT_SEED
SKETCH_SIDE = 128  # sketches are drawn at this size, line widths 1-4 px, and scaled to others


@dataclass(frozen=True)
class Settings:
    workdir: Path = Path("build/demo-controlnet")
    out: Path = CONTROLNET_DIR / NAME
    seed: int = 0
    threads: int = 1
    dataset: tuple[tuple[int, int], ...] = ((64, 3000), (128, 2000))  # side -> scenes
    batches: tuple[tuple[int, int], ...] = ((64, 32), (128, 12))  # side -> batch, about equal cost
    steps: int = 3000
    lr: float = 1e-3
    warmup: int = 50
    checkpoint_every: int = 100
    eval_every: int = 250
    eval_scenes: int = 16


# --- sketches and captions --------------------------------------------------------------------


def sketch(shape: Shape, side: int, rng: random.Random) -> Image.Image:
    """The shape's outline as a quick sketch: light lines on black, as the server feeds line ControlNets
    (control.line_picture). Corners wander, the loop is a little off in size and place, its width
    varies along it (1-4 px at 128 px), and it overshoots its start or stops short of it."""
    scale = SKETCH_SIDE / side
    big = outline(shape, SKETCH_SIDE)
    grow = rng.uniform(0.9, 1.1)
    shift = (rng.gauss(0, 0.012) * SKETCH_SIDE, rng.gauss(0, 0.012) * SKETCH_SIDE)
    cx, cy = (c * SKETCH_SIDE for c in shape.centre)
    corners = [(cx + (x - cx) * grow + shift[0] + rng.gauss(0, 1.2),
                cy + (y - cy) * grow + shift[1] + rng.gauss(0, 1.2)) for x, y in big]
    start = rng.randrange(len(corners))
    loop = corners[start:] + corners[:start]
    loop.append(loop[0])
    # Sub-divided edges, each point nudged: a hand's line is never straight.
    points = []
    for (x0, y0), (x1, y1) in zip(loop, loop[1:], strict=False):
        pieces = max(1, round(math.hypot(x1 - x0, y1 - y0) / 6))
        points += [(x0 + (x1 - x0) * t / pieces + rng.gauss(0, 0.6), y0 + (y1 - y0) * t / pieces + rng.gauss(0, 0.6))
                   for t in range(pieces)]
    end = len(points) + round(len(points) * rng.uniform(-0.08, 0.15))
    points = (points + points[:len(points)])[:max(2, end)]
    image = Image.new("L", (SKETCH_SIDE, SKETCH_SIDE))
    draw = ImageDraw.Draw(image)
    grey = rng.randint(190, 255)
    width = rng.uniform(1, 4)
    for a, b in zip(points, points[1:], strict=False):
        width = min(4.0, max(1.0, width + rng.uniform(-0.5, 0.5)))
        draw.line([a, b], fill=grey, width=round(width), joint="curve")
    if scale != 1:
        image = image.resize((side, side), Image.Resampling.BOX)
    return image.convert("RGB")


def prompt(scene: Scene, rng: random.Random | None = None) -> str:
    """The scene's caption without the shape's position (only the sketch says it); in training, parts
    are left out now and then, and one in ten is empty, as the demo model's captions were."""
    shape = scene.shapes[0]
    if rng is not None and rng.random() < 0.1:
        return ""
    words = ["a", shape.size, shape.colour, shape.kind]
    if rng is not None and rng.random() < 0.15:
        words.remove(shape.size)
    parts = [" ".join(words)]
    if rng is None or rng.random() > 0.15:
        parts.append(scene.background.words)
    return ", ".join(parts)


def hint_tensor(images: list[Image.Image]) -> torch.Tensor:
    """Sketches -> N x 3 x H x W in 0..1, as control.prepare makes the server's hints."""
    array = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def centroid(image: Image.Image) -> tuple[float, float]:
    """Where a sketch's lines lie: the mean of their pixels, weighted by brightness, in fractions of the side."""
    lines = np.asarray(image.convert("L"), dtype=np.float64)
    ys, xs = np.indices(lines.shape)
    height, width = lines.shape
    total = lines.sum()
    return float(((xs + 0.5) * lines).sum() / total / width), float(((ys + 0.5) * lines).sum() / total / height)


# --- 1. data ----------------------------------------------------------------------------------


def one_shape_scenes(count: int, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, count=1) for _ in range(count)]


@torch.no_grad()
def encode(vae: AutoencoderKL, scenes: list[Scene], side: int) -> torch.Tensor:
    chunks = [vae.encode(to_tensor([render(s, side) for s in scenes[i:i + 64]])).latent_dist.mean
              for i in range(0, len(scenes), 64)]
    return torch.cat(chunks) * vae.config.scaling_factor


def build_data(vae: AutoencoderKL, settings: Settings) -> dict[int, dict]:
    data = {}
    for side, count in settings.dataset:
        scenes = one_shape_scenes(count, settings.seed * 1000 + side)
        data[side] = {"latents": encode(vae, scenes, side), "scenes": scenes}
        log.info("encoded %d one-shape scenes at %d px", count, side)
    return data


# --- 2. train ---------------------------------------------------------------------------------


def new_controlnet(unet: UNet2DConditionModel, seed: int) -> ControlNetModel:
    torch.manual_seed(seed)
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=HINT_CHANNELS)


def save_checkpoint(net: ControlNetModel, optimizer: torch.optim.Optimizer, step: int, curve: list, path: Path) -> None:
    save_state({"step": step, "net": net.state_dict(), "optimizer": optimizer.state_dict(), "curve": curve}, path)


def controlled(pipe: StableDiffusionPipeline, net: ControlNetModel, prompts: list[str], hints: torch.Tensor,
               side: int, seed: int, steps: int = 20, strength: float = 1.0, end: float = 1.0,
               guidance: float = 3.0) -> list[Image.Image]:
    """Pictures from the demo pipeline with the server's control wrapper (control.applied), each with its
    own hint (the batch's hints twice over: classifier-free guidance runs the empty prompts first)."""
    controls = None
    if net is not None:
        both = torch.cat([hints, hints]) if guidance > 1 else hints
        latent = side // pipe.vae_scale_factor
        controls = Controls([ActiveControl(NAME, "scribble", net, both, strength, 0.0, end, (latent, latent))])
    generator = torch.Generator().manual_seed(seed)
    with applied(pipe, controls):
        return pipe(prompts, height=side, width=side, num_inference_steps=steps, guidance_scale=guidance,
                    generator=generator, callback_on_step_end=controls.on_step_end if controls else None).images


@dataclass
class Reading:
    on_sketch: bool  # the shape's centroid within POSITION_TOLERANCE of the sketch's
    colour: bool  # a region of the prompt's colour is there
    distance: float | None


def read(image: Image.Image, scene: Scene, sketch_image: Image.Image) -> Reading:
    blob = find_blob(image, scene.shapes[0].colour)
    if blob is None:
        return Reading(False, False, None)
    sx, sy = centroid(sketch_image)
    distance = math.hypot(blob.x - sx, blob.y - sy)
    return Reading(distance <= POSITION_TOLERANCE, True, distance)


def quick_check(pipe: StableDiffusionPipeline, net: ControlNetModel, settings: Settings) -> float:
    """The share of validation scenes whose shape lands on its sketch (10 steps, 128 px)."""
    net.eval()
    scenes = one_shape_scenes(settings.eval_scenes, VALIDATION_SEED)
    rng = random.Random(VALIDATION_SEED)
    sketches = [sketch(s.shapes[0], 128, rng) for s in scenes]
    images = controlled(pipe, net, [prompt(s) for s in scenes], hint_tensor(sketches), 128, VALIDATION_SEED, 10)
    net.train()
    return sum(read(i, s, k).on_sketch for i, s, k in zip(images, scenes, sketches, strict=True)) / len(scenes)


def train(pipe: StableDiffusionPipeline, data: dict[int, dict], settings: Settings,
          checkpoint: Path) -> ControlNetModel:
    net = new_controlnet(pipe.unet, settings.seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=0.0)
    step, curve = resume(net, optimizer, checkpoint, log)
    unet, text_encoder = pipe.unet.requires_grad_(False), pipe.text_encoder.requires_grad_(False)

    def predict(draw: Draw, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        hints = hint_tensor([sketch(s.shapes[0], draw.side, draw.rng) for s in draw.scenes])
        with torch.no_grad():
            context = text_encoder(tokenize(pipe.tokenizer, [prompt(s, draw.rng) for s in draw.scenes]))[0]
        down, mid = net(noisy, timesteps, encoder_hidden_states=context, controlnet_cond=hints, return_dict=False)
        return unet(noisy, timesteps, context, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample

    net.train()
    train_steps(data, settings, list(net.parameters()), optimizer, predict, lambda: quick_check(pipe, net, settings),
                lambda step, curve: save_checkpoint(net, optimizer, step, curve, checkpoint), step, curve, log)
    return net


# --- 3. export --------------------------------------------------------------------------------


def export(net: ControlNetModel, out: Path) -> None:
    """float16 weights: half the size, and what the server computes with on a GPU; on a CPU it loads
    them into float32."""
    net.to(torch.float16).save_pretrained(out, safe_serialization=True)
    net.to(torch.float32)
    log.info("saved the ControlNet to %s", out)


# --- 4. evaluate ------------------------------------------------------------------------------


def tally(readings: list[Reading]) -> dict[str, float | int]:
    found = [r.distance for r in readings if r.distance is not None]
    return {"position_accuracy": round(sum(r.on_sketch for r in readings) / len(readings), 4),
            "colour_accuracy": round(sum(r.colour for r in readings) / len(readings), 4),
            "median_distance": round(float(np.median(found)), 4) if found else None,
            "pictures": len(readings)}


def evaluate(pipe: StableDiffusionPipeline, net: ControlNetModel, scenes_count: int, steps: int, identical_count: int,
             batch: int = 10) -> tuple[dict, list[Image.Image]]:
    scenes = one_shape_scenes(scenes_count, HELD_OUT_SEED)
    rng = random.Random(HELD_OUT_SEED)
    # As an artist's sketch layer reaches the server: through line_picture.
    sketches = [line_picture(sketch(s.shapes[0], 128, rng)) for s in scenes]
    runs = {"with control": {}, "without control (chance)": None, "control ending at 0.5": {"end": 0.5}}
    readings: dict[str, list[Reading]] = {name: [] for name in runs}
    samples: list[Image.Image] = list(sketches[:5])
    identical = checked = 0
    for first in range(0, len(scenes), batch):
        chunk, drawn = scenes[first:first + batch], sketches[first:first + batch]
        prompts, hints = [prompt(s) for s in chunk], hint_tensor(drawn)
        for name, options in runs.items():
            images = controlled(pipe, net if options is not None else None, prompts, hints, 128, HELD_OUT_SEED + first,
                                steps, **(options or {}))
            readings[name] += [read(i, s, k) for i, s, k in zip(images, chunk, drawn, strict=True)]
            if first == 0:
                samples += images[:5]
            if name == "without control (chance)" and first < identical_count:
                # The ControlNet runs, adding nothing: the server does not even run it at strength 0.
                zero = controlled(pipe, net, prompts, hints, 128, HELD_OUT_SEED + first, steps, strength=0.0)
                identical += sum(np.array_equal(np.asarray(a), np.asarray(b))
                                 for a, b in zip(images, zero, strict=True))
                checked += len(chunk)
        log.info("evaluated %d / %d scenes", first + len(chunk), len(scenes))
    results = {name: tally(r) for name, r in readings.items()}
    results["strength 0 equals no control"] = {"identical": identical, "pictures": checked}
    return results, samples


def load_controlnet(folder: Path) -> ControlNetModel:
    return ControlNetModel.from_pretrained(folder, use_safetensors=True, torch_dtype=torch.float32).eval()


def write_evaluation(settings: Settings, scenes: int, steps: int, output: Path, wall_minutes: dict) -> None:
    pipe = load_pipeline()
    net = load_controlnet(settings.out).requires_grad_(False)
    started = time.monotonic()
    results, samples = evaluate(pipe, net, scenes, steps, identical_count=20)
    checkpoint = settings.workdir / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else {"curve": [], "step": None}
    files = sorted(settings.out.glob("*.safetensors"))
    report = {
        "model": NAME,
        "what": ("one-shape held-out scenes; the prompt names colour, kind, size and background but not the "
                 "position, which only the sketch gives; read by tools/demo_model/detect.py"),
        "targets": {"position_accuracy with control": 0.85, "colour_accuracy with control": 0.85,
                    "position_accuracy ending at 0.5": 0.8, "strength 0": "bit-identical to no control"},
        "settings": {"scenes": scenes, "steps": steps, "guidance": 3.0, "side": 128,
                     "scheduler": type(pipe.scheduler).__name__, "seed": HELD_OUT_SEED,
                     "position_tolerance": POSITION_TOLERANCE},
        "results": results,
        "training": {"steps": state["step"], "validation_curve [step, on-sketch share, seconds]": state["curve"],
                     "wall_minutes": wall_minutes},
        "safetensors_mb": round(sum(f.stat().st_size for f in files) / 1e6, 2),
        "parameters_millions": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        "hardware": hardware(),
        "evaluation_minutes": round((time.monotonic() - started) / 60, 1),
    }
    write_report(report, samples, 5, output)


def run(stage: str, settings: Settings, scenes: int, eval_steps: int, results: Path) -> None:
    torch.set_num_threads(settings.threads)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    data_file = settings.workdir / "data.pt"
    checkpoint = settings.workdir / "checkpoint.pt"
    times_file = settings.workdir / "wall-minutes.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    if stage == "evaluate":
        write_evaluation(settings, scenes, eval_steps, results, times)
        return
    pipe = load_pipeline()
    if stage in ("all", "data"):
        started = time.monotonic()
        data = build_data(pipe.vae, settings)
        # Plain containers of our own making (Scene objects): read back with weights_only=False.
        torch.save(data, data_file)
        times["data"] = round((time.monotonic() - started) / 60, 1)
    if stage in ("all", "train"):
        started = time.monotonic()
        net = train(pipe, torch.load(data_file, weights_only=False), settings, checkpoint)
        times["train"] = round(times.get("train", 0) + (time.monotonic() - started) / 60, 1)
    if stage == "export":
        net = new_controlnet(pipe.unet, settings.seed)
        net.load_state_dict(torch.load(checkpoint, weights_only=True)["net"])
    if stage in ("all", "train", "export"):
        export(net, settings.out)
    times_file.write_text(json.dumps(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", choices=("all", "data", "train", "export", "evaluate"), default="all")
    parser.add_argument("--workdir", type=Path, default=Settings.workdir)
    parser.add_argument("--out", type=Path, default=Settings.out)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--lr", type=float, default=Settings.lr)
    parser.add_argument("--threads", type=int, default=Settings.threads)
    parser.add_argument("--scenes", type=int, default=100, help="evaluate: held-out scenes")
    parser.add_argument("--eval-steps", type=int, default=20, help="evaluate: Euler steps")
    parser.add_argument("--results", type=Path, default=RESULTS, help="evaluate: the report to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings(workdir=args.workdir, out=args.out, steps=args.steps, lr=args.lr, threads=args.threads)
    run(args.stage, settings, args.scenes, args.eval_steps, args.results)


if __name__ == "__main__":
    main()
