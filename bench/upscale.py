"""Upscale with refine at 1024² and 4096²: time in proportion to the area, peak memory bounded, and
diffusers' untiled img2img pipeline beside it where it fits (docs/upscale.md).

Each measurement is a fresh process (peak RSS is a process's lifetime maximum) that runs one job
through the server's job handler (server/generate.py), as a client's `generate` would: an upscale
x2 of a picture half the size by the tiny ESRGAN, refined at strength 0.5 with the tiny SD1.5
model (2 steps, so 1 runs), result as png. The UNet works in tiles of the model's native size and
the VAE in tiles of 576², the tiles SD1.5's VAE gets in float32 (VAE_BUDGET scaled to the tiny
VAE's 4 channels). A small job first warms the process up; it is not timed. Time is the process's CPU time, on one
thread (this machine is shared: wall time there says more about the neighbours), wall time beside it.

Targets: time(4096²) / time(1024²) within ±25% of 16 (the area ratio); peak RSS at 4096² at most
1.5 times that at 1024².

Run: python -m bench.upscale  → bench/results/upscale.json
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.report import write_report

SIZES = (1024, 2048, 4096)
AREA_RATIO, TIME_TOLERANCE, MEMORY_TARGET = 16.0, 0.25, 1.5
VAE_TILE = 576
STEPS, STRENGTH = 2, 0.5
# One thread: on a shared machine, waiting worker threads spin and bill CPU time for the neighbours'
# load (seen: the same 1024² job at 20 and at 95 CPU seconds with 2 threads).
THREADS = 1
# diffusers' untiled pipeline at a size counts as not fitting when it runs longer than this.
UNTILED_TIMEOUT = 600


def picture(side: int):
    """A smooth picture with some edges: gradients and a grid of soft discs."""
    from shared.messages import Image

    y, x = np.mgrid[0:side, 0:side] / side
    rgb = np.dstack([120 + 80 * x, 150 + 60 * y, 200 - 50 * x * y])
    discs = (np.sin(x * 12 * np.pi) * np.sin(y * 12 * np.pi)) > 0.6
    rgb[discs] = (200, 60, 40)
    rgba = np.dstack([rgb.astype(np.uint8), np.full((side, side), 255, np.uint8)])
    return Image(width=side, height=side, format="rgba8", data=rgba.tobytes())


def run_tiled(side: int, folder: Path) -> dict:
    """One upscale job to side² through the job handler; seconds and this process's peak RSS."""
    import torch

    from server.generate import Generator
    from server.imaging import latents
    from server.imaging.outputs import OutputWriter
    from server.jobs.job import Job
    from server.models.loading import PipelineCache
    from server.models.registry import Registry
    from shared.messages import Generate
    from testing.tiny_models import write_tiny_models
    from testing.tiny_upscalers import write_tiny_upscalers

    torch.set_num_threads(THREADS)
    write_tiny_models(folder / "models")
    write_tiny_upscalers(folder / "upscalers")
    registry = Registry([folder / "models", folder / "upscalers"])
    registry.scan()
    latents.VAE_BUDGET = VAE_TILE * VAE_TILE * 4 * 4 * latents.ACTIVATIONS
    generator = Generator(registry, PipelineCache(torch.device("cpu"), torch.float32), OutputWriter(folder / "out"))

    def job(half: int) -> float:
        request = Generate(id=uuid.uuid4().hex, mode="upscale", model="tiny-sd15", image=picture(half), scale=2,
                           upscaler="tiny-esrgan-2x", strength=STRENGTH, steps=STEPS, seed=1, prompt="a picture",
                           result_format="png")
        result = generator(Job(request=request, owner=0, reply=lambda message: None))
        assert result.images[0].image.width == 2 * half

    return timed(job, side)


def run_untiled(side: int, folder: Path) -> dict:
    """diffusers' img2img pipeline on the whole side² picture (Lanczos-enlarged), UNet and VAE untiled."""
    import PIL.Image
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    from testing.tiny_models import tiny_pipeline

    torch.set_num_threads(THREADS)
    pipe = StableDiffusionImg2ImgPipeline.from_pipe(tiny_pipeline("sd15"))
    pipe.set_progress_bar_config(disable=True)

    def job(half: int) -> float:
        small = picture(half)
        start = PIL.Image.frombytes("RGBA", (half, half), small.data).convert("RGB").resize(
            (2 * half, 2 * half), PIL.Image.Resampling.LANCZOS)
        pipe(prompt="a picture", image=start, strength=STRENGTH, num_inference_steps=STEPS,
             generator=torch.Generator().manual_seed(1)).images[0].save(folder / "untiled.png")

    return timed(job, side)


def timed(job, side: int) -> dict:
    """`job(half side)` once small to warm up, then timed for side²; with the process's peak RSS."""
    job(128)
    wall, cpu = time.perf_counter(), time.process_time()
    job(side // 2)
    return {"cpu_seconds": round(time.process_time() - cpu, 2), "wall_seconds": round(time.perf_counter() - wall, 2),
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def measure(kind: str, side: int, timeout: float = 3600) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    try:
        done = subprocess.run([sys.executable, "-m", "bench.upscale", kind, str(side)], capture_output=True,
                              text=True, timeout=timeout, env=environment)
    except subprocess.TimeoutExpired:
        return {"skipped": f"did not finish within {timeout:.0f} s"}
    if done.returncode:
        if kind == "untiled":
            return {"skipped": f"failed: {done.stderr.strip().splitlines()[-1][:200]}"}
        raise RuntimeError(f"{kind} {side}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    tiled = {side: measure("tiled", side) for side in SIZES}
    untiled = {side: measure("untiled", side, UNTILED_TIMEOUT) for side in SIZES}
    small, large = tiled[SIZES[0]], tiled[SIZES[-1]]
    time_ratio = large["cpu_seconds"] / small["cpu_seconds"]
    memory_ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    report = {
        "what": f"upscale x2 (tiny ESRGAN) + refine at strength {STRENGTH} (tiny SD1.5, {STEPS} steps, UNet and VAE "
                f"in tiles), one fresh process per size, {THREADS} thread; untiled: diffusers' img2img pipeline on "
                "the whole picture",
        "tiled": {f"{side}x{side}": tiled[side] for side in SIZES},
        "untiled_diffusers": {f"{side}x{side}": untiled[side] for side in SIZES},
        "time_ratio_4096_to_1024": round(time_ratio, 2),
        "time_target": [AREA_RATIO * (1 - TIME_TOLERANCE), AREA_RATIO * (1 + TIME_TOLERANCE)],
        "time_met": abs(time_ratio / AREA_RATIO - 1) <= TIME_TOLERANCE,
        "memory_ratio_4096_to_1024": round(memory_ratio, 3),
        "memory_target": MEMORY_TARGET,
        "memory_met": memory_ratio <= MEMORY_TARGET,
    }
    write_report(report, "upscale", show=True)


if __name__ == "__main__":
    if len(sys.argv) == 3:
        with tempfile.TemporaryDirectory() as scratch:
            run = run_tiled if sys.argv[1] == "tiled" else run_untiled
            print(json.dumps(run(int(sys.argv[2]), Path(scratch))))
    else:
        main()
