"""What the server adds to a generation: served through the websocket vs a direct diffusers call, for
txt2img, img2img and inpaint, in CPU seconds of the process doing the work as well as in wall time.

Each side runs in a process of its own with the same torch threads, loading the same model folder:
  served   `python -m server serve` (testing/processes.py); its CPU seconds (all threads) are read from
           the OS before a request is sent and after its result arrived;
  direct   this module as a worker (`--direct`), calling the diffusers pipeline with the same
           parameters and measuring its own process's CPU time around the call.
Rounds interleave the two sides, and alternate which goes first, so drift in the machine's load hits
both alike. CPU seconds hold where other work shares the cores; wall time does not.

(a) the tiny test model at 64 px (txt2img): the absolute overhead;
(b) an SD1.5-sized pipeline (random weights, testing/full_size.py): txt2img at 256 px; img2img at
    256 px, strength 0.5 of 4 steps; inpaint of a 128 px selection of a 1024 px canvas, which the
    server repaints at the model's native 512 px as img2img at strength 1 plus its latent blend and
    compositing, against diffusers' img2img pipeline on the same context picture. Target for the
    ratio served / direct in CPU seconds: <= 1.03 each.

Run: python -m bench.overhead [--skip-large] [--rounds N] [--threads N]  -> bench/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import psutil
import torch

from bench.report import write_report
from server.imaging.sizing import native_size
from shared.client import Client
from shared.crop import Rect, context_rect, edge_defaults
from shared.messages import Generate, Image, Mask
from testing.full_size import SD15_NAME, write_random_sd15
from testing.processes import ROOT, ServerProcess
from testing.tiny_models import write_tiny_models

TARGET = 1.03
PROMPT = "a lighthouse at dusk"
COMMON = {"prompt": PROMPT, "cfg_scale": 7.0, "scheduler": "euler", "seed": 3}
CANVAS, SELECTION = 1024, 128


# --- the jobs, as both sides run them ------------------------------------------------------------


def painting(side: int) -> np.ndarray:
    """An opaque RGBA canvas with some structure (so the encoder sees a picture, not a flat colour)."""
    y, x = np.mgrid[0:side, 0:side]
    rgba = np.stack([x * 255 // side, y * 255 // side, (x ^ y) & 255, np.full_like(x, 255)], -1)
    return rgba.astype(np.uint8)


def jobs(model: str, size: int, folder: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mode -> (the served request's fields, the direct worker's job)."""
    canvas = painting(size)
    start = folder / f"start-{size}.png"
    PIL.Image.fromarray(canvas).convert("RGB").save(start)
    image = Image(width=size, height=size, format="rgba8", data=canvas.tobytes())
    out = {
        "txt2img": ({"mode": "txt2img", "width": size, "height": size, "steps": 2},
                    {"pipeline": "txt2img", "width": size, "height": size, "steps": 2}),
        "img2img": ({"mode": "img2img", "image": image, "strength": 0.5, "steps": 4},
                    {"pipeline": "img2img", "image": str(start), "strength": 0.5, "steps": 4}),
    }
    if model == SD15_NAME:
        out["inpaint"] = inpaint_job(folder)
    return out


def inpaint_job(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A selection in the middle of a painted canvas: the plugin sends its context region; the direct
    side refines that region's picture at the size the server generates it."""
    selection = Rect((CANVAS - SELECTION) // 2, (CANVAS - SELECTION) // 2, SELECTION, SELECTION)
    region = context_rect(selection, Rect(0, 0, CANVAS, CANVAS), edge_defaults(selection), "auto")
    pixels = painting(CANVAS)[region.y:region.bottom, region.x:region.right]
    coverage = np.zeros(pixels.shape[:2], np.uint8)
    inner = selection.relative_to(region)
    coverage[inner.y:inner.bottom, inner.x:inner.right] = 255
    width, height = native_size(region.width, region.height, 512, 8)
    context = folder / "context.png"
    PIL.Image.fromarray(pixels).convert("RGB").resize((width, height), PIL.Image.Resampling.LANCZOS).save(context)
    served = {"mode": "inpaint", "steps": 2,
              "image": Image(x=region.x, y=region.y, width=region.width, height=region.height, format="rgba8",
                             data=pixels.tobytes()),
              "mask": Mask(x=region.x, y=region.y, width=region.width, height=region.height, format="a8",
                           data=coverage.tobytes())}
    return served, {"pipeline": "img2img", "image": str(context), "strength": 1.0, "steps": 2}


# --- the direct side: a worker process -----------------------------------------------------------


def direct_worker(models: Path) -> None:
    """Reads one job a line from stdin, runs it with diffusers alone, answers its CPU and wall seconds."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    bases: dict[str, Any] = {}
    for line in sys.stdin:
        job = json.loads(line)
        name = job["model"]
        if name not in bases:
            bases[name] = StableDiffusionPipeline.from_pretrained(
                models / "checkpoints" / name, local_files_only=True, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)
            bases[name].set_progress_bar_config(disable=True)
        base = bases[name]
        arguments = {"prompt": PROMPT, "num_inference_steps": job["steps"], "guidance_scale": COMMON["cfg_scale"],
                     "generator": [torch.Generator("cpu").manual_seed(COMMON["seed"])], "output_type": "pil"}
        if job["pipeline"] == "txt2img":
            pipe, arguments = base, arguments | {"width": job["width"], "height": job["height"]}
        else:
            pipe = StableDiffusionImg2ImgPipeline.from_pipe(base)
            arguments |= {"image": PIL.Image.open(job["image"]).convert("RGB"), "strength": job["strength"]}
        cpu, wall = time.process_time(), time.perf_counter()
        pipe(**arguments)
        print(json.dumps({"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}), flush=True)


class Direct:
    def __init__(self, models: Path, threads: int):
        env = {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
        self.process = subprocess.Popen([sys.executable, "-m", "bench.overhead", "--direct", str(models)], cwd=ROOT,
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, model: str, job: dict[str, Any]) -> dict[str, float]:
        self.process.stdin.write(json.dumps({"model": model, **job}) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the direct worker ended")
        return json.loads(answer)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


# --- the served side -------------------------------------------------------------------------------


def served(client: Client, server: ServerProcess, model: str, fields: dict[str, Any]) -> dict[str, float]:
    process = psutil.Process(server.process.pid)
    before, wall = process.cpu_times(), time.perf_counter()
    client.generate(Generate(id=uuid.uuid4().hex, model=model, **COMMON, **fields))
    wall, after = time.perf_counter() - wall, process.cpu_times()
    return {"cpu_s": (after.user + after.system) - (before.user + before.system), "wall_s": wall}


def per_step(job: Callable[[str, int], float], names: Iterable[str], rounds: int,
             steps: tuple[int, int]) -> tuple[dict[tuple[str, int], float], dict[str, float]]:
    """The median of `job(name, n)` for each variant and each of the two step counts over `rounds` rounds that
    interleave them, and each variant's cost per step: the difference of its two medians over the difference
    in steps, which leaves out what every job pays once (the text encoder, the VAE, the reply)."""
    seconds: dict[tuple[str, int], list[float]] = {}
    names = list(names)
    for _ in range(rounds):
        for name in names:
            for count in steps:
                seconds.setdefault((name, count), []).append(job(name, count))
    median = {key: statistics.median(values) for key, values in seconds.items()}
    return median, {name: (median[(name, steps[1])] - median[(name, steps[0])]) / (steps[1] - steps[0])
                    for name in names}


def step_report(doc: str, size: int, rounds: int, median: dict[tuple[str, int], float], per_step: dict[str, float],
                ratios: dict[str, float], targets: dict[str, float]) -> dict[str, Any]:
    """The report of a `per_step` bench on one thread: its first paragraph, the medians, the costs per step,
    the ratios and whether each met its target."""
    return {
        "what": doc.split("\n\n")[0].replace("\n", " "),
        "size": size, "rounds": rounds, "threads": 1,
        "cpu_s_median": {f"{name}_{steps}_steps": round(value, 3) for (name, steps), value in median.items()},
        "cpu_s_per_step": {name: round(value, 3) for name, value in per_step.items()},
        "ratios": {name: round(value, 3) for name, value in ratios.items()},
        "targets": targets,
        "met": {name: ratios[name] <= targets[name] for name in targets},
    }


def measure(server: ServerProcess, direct: Direct, model: str, size: int, rounds: int, folder: Path) -> dict:
    results: dict[str, Any] = {}
    with Client(server.url, name="bench") as client:
        for mode, (fields, job) in jobs(model, size, folder).items():
            served(client, server, model, fields)  # loads the model, warms both sides up
            direct.run(model, job)
            times: dict[str, list[dict[str, float]]] = {"served": [], "direct": []}
            for index in range(rounds):
                order = ("served", "direct") if index % 2 == 0 else ("direct", "served")  # who goes first alternates
                for side in order:
                    times[side].append(served(client, server, model, fields) if side == "served"
                                       else direct.run(model, job))
            results[mode] = summary(times)
            print(mode, json.dumps(results[mode]), flush=True)
    return results


def summary(times: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": len(times["served"])}
    for unit in ("cpu_s", "wall_s"):
        served_median = statistics.median(t[unit] for t in times["served"])
        direct_median = statistics.median(t[unit] for t in times["direct"])
        per_round = [s[unit] / d[unit] for s, d in zip(times["served"], times["direct"], strict=True)]
        out[unit.removesuffix("_s")] = {
            "served_median_s": round(served_median, 4), "direct_median_s": round(direct_median, 4),
            "ratio": round(served_median / direct_median, 4),
            "overhead_ms": round((served_median - direct_median) * 1000, 1),
            "ratio_per_round": [round(r, 4) for r in per_round],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-large", action="store_true", help="only the tiny model")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each side; with one, CPU seconds count no thread spinning in wait")
    parser.add_argument("--direct", type=Path, help=argparse.SUPPRESS)  # the worker, started by this bench
    args = parser.parse_args()
    if args.direct:
        direct_worker(args.direct)
        return
    report: dict[str, Any] = {"threads": args.threads, "target_cpu_ratio": TARGET}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = folder / "models"
        write_tiny_models(models)
        if not args.skip_large:
            write_random_sd15(models)
        direct = Direct(models, args.threads)
        try:
            with ServerProcess(models, folder / "server", threads=args.threads) as server:
                report["tiny_64"] = measure(server, direct, "tiny-sd15", 64, 3 * args.rounds, folder)
                if not args.skip_large:
                    report["sd15_size"] = measure(server, direct, SD15_NAME, 256, args.rounds, folder)
        finally:
            direct.close()
    if not args.skip_large:
        ratios = [result["cpu"]["ratio"] for result in report["sd15_size"].values()]
        report["all_cpu_ratios_within_target"] = all(ratio <= TARGET for ratio in ratios)
    write_report(report, "overhead", show=True)


if __name__ == "__main__":
    main()
