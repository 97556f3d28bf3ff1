"""What the server adds to a generation: end-to-end through the websocket vs a direct diffusers call.

Both sides run the very same loaded pipeline object with identical parameters, in one run:
  (a) the tiny test model at 64×64 — the absolute overhead in ms (request encode, queue, result
      encode, transfer, decode);
  (b) a Stable Diffusion 1.5-sized pipeline (860 M-parameter UNet, random weights, built from the
      shipped configs) at 256×256, 2 steps — the ratio (target ≤ 1.03).

Run: python -m bench.overhead [--skip-large]  → bench/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.report import write_report
from server.config import ServerConfig
from server.models import schedulers
from server.models.loading import CONFIGS
from server.models.pipelines import Model
from shared.client import Client
from shared.messages import Generate
from testing.serving import running_server, url
from testing.tiny_models import write_tiny_models

REPEATS = 5


def random_sd15(folder: Path) -> None:
    """A full-size SD1.5 pipeline with random weights, from the configs that ship with the server."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    configs = CONFIGS / "sd15"
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(configs / "tokenizer"),
        scheduler=schedulers.make_scheduler("euler", json.loads((configs / "scheduler" / "scheduler_config.json")
                                                                  .read_text())),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "checkpoints" / "random-sd15")


def measure(server, model: str, size: int, steps: int) -> dict:
    request = {"mode": "txt2img", "model": model, "prompt": "a lighthouse at dusk", "width": size, "height": size,
               "steps": steps, "cfg_scale": 7.0, "scheduler": "euler", "seed": 3}
    with Client(url(server), name="bench") as client:
        client.generate(Generate(id="warm", **request))  # loads the model
        entry = server.registry.get(model)
        pipe = Model(entry, server.cache.get(entry)).pipeline("txt2img")

        def direct() -> float:
            pipe.scheduler = schedulers.make_scheduler("euler", pipe.scheduler.config)
            started = time.perf_counter()
            pipe(prompt=request["prompt"], width=size, height=size, num_inference_steps=steps, guidance_scale=7.0,
                 generator=[torch.Generator("cpu").manual_seed(3)], output_type="pil")
            return time.perf_counter() - started

        def served(index: int) -> float:
            started = time.perf_counter()
            client.generate(Generate(id=f"run-{index}", **request))
            return time.perf_counter() - started

        # Interleaved, so drift in machine load hits both sides alike.
        direct_times, served_times = [], []
        for index in range(REPEATS):
            direct_times.append(direct())
            served_times.append(served(index))
    d, s = statistics.median(direct_times), statistics.median(served_times)
    return {"size": size, "steps": steps, "direct_median_s": round(d, 4), "served_median_s": round(s, 4),
            "overhead_ms": round((s - d) * 1000, 1), "ratio": round(s / d, 4), "repeats": REPEATS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-large", action="store_true", help="only the tiny model")
    args = parser.parse_args()
    report = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        write_tiny_models(models)
        if not args.skip_large:
            random_sd15(models)
        with running_server(ServerConfig(models=[models], outputs=Path(tmp) / "out")) as server:
            report["tiny_64"] = measure(server, "tiny-sd15", 64, 2)
            if not args.skip_large:
                report["sd15_size_256"] = measure(server, "random-sd15", 256, 2)
                report["target_ratio"] = 1.03
    write_report(report, "overhead", show=True)


if __name__ == "__main__":
    main()
