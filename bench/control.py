"""What control images cost: jobs with ControlNets against the same job without, served, in CPU seconds of
the serving process (bench/overhead.py's `served`), on the random-weight SD1.5-sized model with a
random-weight ControlNet of SD1.5's architecture beside it.

Per step: (job of 6 steps - job of 2 steps) / 4, which leaves out what every job pays once (the text
encoder, the VAE, the reply); over the job: the 6-step job. Rounds interleave the variants.
Targets: one ControlNet per step <= 1.5x plain; one with `end` 0.5, over the job <= 1.25x; two <= 2x.

Run: python -m bench.control [--rounds N] [--size PX]  -> bench/results/control.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.overhead import per_step as step_costs
from bench.overhead import served, step_report
from bench.report import write_report
from shared.client import Client
from shared.messages import Control, Image
from testing.full_size import SD15_NAME, write_random_sd15
from testing.processes import ServerProcess

TARGETS = {"one_per_step": 1.5, "end_half_job": 1.25, "two_per_step": 2.0}
STEPS = (2, 6)


def write_random_controlnet(models: Path) -> None:
    from diffusers import ControlNetModel, UNet2DConditionModel

    folder = models / "controlnet" / "random-sd15-scribble"
    if not (folder / "config.json").is_file():
        torch.manual_seed(1)
        unet = UNet2DConditionModel.from_pretrained(models / "checkpoints" / SD15_NAME / "unet")
        ControlNetModel.from_unet(unet).save_pretrained(folder)


def sketch(size: int) -> Image:
    pixels = np.zeros((size, size, 4), np.uint8)
    pixels[size // 3: size // 3 + 4, :, :] = 255
    pixels[:, size // 2: size // 2 + 4, :] = 255
    return Image(width=size, height=size, format="rgba8", data=pixels.tobytes())


def variants(size: int) -> dict[str, list[Control]]:
    line = sketch(size)
    return {"plain": [], "one": [Control(kind="scribble", image=line)],
            "end_half": [Control(kind="scribble", image=line, end=0.5)],
            "two": [Control(kind="scribble", image=line), Control(kind="scribble", image=line, strength=0.5)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        write_random_sd15(models)
        write_random_controlnet(models)
        with ServerProcess(models, Path(tmp) / "server", threads=1) as server, \
                Client(server.url, name="bench") as client:
            jobs = variants(args.size)

            def job(name: str, steps: int) -> float:
                fields: dict[str, Any] = {"mode": "txt2img", "width": args.size, "height": args.size, "steps": steps,
                                          "control": jobs[name]}
                return served(client, server, SD15_NAME, fields)["cpu_s"]

            job("two", 2)  # loads the model and the ControlNet
            median, per_step = step_costs(job, jobs, args.rounds, STEPS)
    ratios = {
        "one_per_step": per_step["one"] / per_step["plain"],
        "end_half_job": median[("end_half", STEPS[1])] / median[("plain", STEPS[1])],
        "two_per_step": per_step["two"] / per_step["plain"],
    }
    write_report(step_report(__doc__, args.size, args.rounds, median, per_step, ratios, TARGETS), "control", show=True)


if __name__ == "__main__":
    main()
