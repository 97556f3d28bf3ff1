"""Regional prompts: the cost of a 3-region job against the same job without regions, in one run.

Model: Stable Diffusion 1.5's architecture with its UNet at half width (blocks 160/320/640/640, a
quarter of SD1.5's UNet compute), SD1.5's text encoder and VAE, random weights (no weights can be
downloaded here). Size 384x384, CFG 7 (the UNet sees batch 2). Three regions cover the left, middle
and right thirds with soft edges.

1. Per step (headline): one UNet forward as the pipeline runs it, without regions (77 tokens) and
   with three (308 tokens and the regional cross-attention), in back-to-back pairs alternating
   which goes first. Target: median ratio <= 1.3.
2. Whole jobs through a real server on loopback (txt2img, 4 steps, VAE decode included), the same
   pairs, with the text embeddings cached (re-generating, live mode) and with new prompts every job
   (the three regions' prompts are encoded too).

Times are this process's CPU time (one torch thread): other work on the machine inflates wall
time, not CPU time. Wall times are recorded beside them.

Run: python -m bench.regions  -> bench/results/regions.json
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from bench.report import write_report
from server.conditioning import regions
from server.config import ServerConfig
from server.models.loading import CONFIGS
from shared.client import Client
from shared.messages import Generate, Mask, Region
from testing.serving import running_server, url

SIDE, STEPS, CFG = 384, 4, 7.0
UNET_BLOCKS = [160, 320, 640, 640]
STEP_PAIRS, JOB_PAIRS, NEW_PROMPT_PAIRS = 8, 3, 3
TARGET_RATIO = 1.3
THREADS = 1
PROMPTS = ("a pine forest", "a stone tower", "a calm lake")


def build_model(folder: Path) -> StableDiffusionPipeline:
    """The half-width SD1.5, also written to `folder` as a diffusers folder for the server."""
    sd15 = CONFIGS / "sd15"
    torch.manual_seed(0)
    unet_config = json.loads((sd15 / "unet" / "config.json").read_text())
    unet = UNet2DConditionModel.from_config({**unet_config, "block_out_channels": UNET_BLOCKS})
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(sd15, subfolder="vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(sd15 / "text_encoder"))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(sd15 / "tokenizer"), unet=unet,
        scheduler=DPMSolverMultistepScheduler.from_pretrained(sd15, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return pipe


def third(index: int) -> np.ndarray:
    """Coverage (0..255) of the index-th vertical third, with a 32 px soft edge."""
    x = np.arange(SIDE, dtype=np.float32)
    left, right = index * SIDE / 3, (index + 1) * SIDE / 3
    row = np.clip(np.minimum(x - left + 16, right + 16 - x) / 32, 0, 1)
    return (np.tile(row, (SIDE, 1)) * 255).astype(np.uint8)


COVERAGE = [third(i) for i in range(3)]


def timed(run) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of run()."""
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def paired(run_plain, run_regional, count: int) -> dict:
    """Back-to-back pairs, alternating which goes first; ratios of CPU times."""
    cpu: dict[str, list[float]] = {"none": [], "regions": []}
    wall: dict[str, list[float]] = {"none": [], "regions": []}
    for i in range(count):
        order = ("none", "regions") if i % 2 == 0 else ("regions", "none")
        for name in order:
            seconds, elapsed = timed(run_plain if name == "none" else run_regional)
            cpu[name].append(round(seconds, 3))
            wall[name].append(round(elapsed, 3))
        print(f"  pair {i + 1}/{count}: none {cpu['none'][-1]} s, regions {cpu['regions'][-1]} s (CPU)",
              file=sys.stderr, flush=True)
    ratios = [r / n for n, r in zip(cpu["none"], cpu["regions"], strict=True)]
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "median_cpu_s": {name: round(statistics.median(values), 3) for name, values in cpu.items()},
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
    }


def unet_step(pipe: StableDiffusionPipeline) -> dict:
    """One UNet forward with CFG's batch of 2, without and with three regions."""
    unet = pipe.unet
    latent = SIDE // pipe.vae_scale_factor
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, latent, latent, generator=generator)
    plain = torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator)
    regional = torch.cat([plain, torch.randn(2, 3 * 77, unet.config.cross_attention_dim, generator=generator)], 1)
    masks = torch.from_numpy(np.stack(COVERAGE)).float()[:, None] / 255
    masks = torch.nn.functional.interpolate(masks, size=(latent, latent), mode="area")[:, 0]
    restriction = regions.Restriction(masks, [(77 * (i + 1), 77 * (i + 2)) for i in range(3)], 4 * 77)

    def forward(context: torch.Tensor, limit: regions.Restriction | None) -> None:
        with torch.no_grad(), regions.restricted(unet, limit):
            unet(sample, 500, encoder_hidden_states=context)

    forward(plain, None)
    forward(regional, restriction)
    return paired(lambda: forward(plain, None), lambda: forward(regional, restriction), STEP_PAIRS)


def job(client: Client, regional: bool, tag: str) -> None:
    masks = [Mask(width=SIDE, height=SIDE, format="a8", data=c.tobytes()) for c in COVERAGE]
    request = Generate(id=uuid.uuid4().hex, mode="txt2img", model="mid-sd15", prompt=f"a landscape {tag}".strip(),
                       negative_prompt="blurry", width=SIDE, height=SIDE, steps=STEPS, cfg_scale=CFG, seed=1,
                       regions=[Region(mask=m, prompt=f"{what} {tag}".strip())
                                for m, what in zip(masks, PROMPTS, strict=True)] if regional else [])
    client.generate(request)


def jobs(client: Client) -> dict:
    job(client, False, "")
    job(client, True, "")
    cached = paired(lambda: job(client, False, ""), lambda: job(client, True, ""), JOB_PAIRS)
    fresh = paired(lambda: job(client, False, uuid.uuid4().hex[:8]), lambda: job(client, True, uuid.uuid4().hex[:8]),
                   NEW_PROMPT_PAIRS)
    return {"steps": STEPS, "cached_prompts": cached, "new_prompts": fresh}


def main() -> None:
    torch.set_num_threads(THREADS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as temp:
        models = Path(temp) / "models"
        pipe = build_model(models / "checkpoints" / "mid-sd15")
        print("per step", file=sys.stderr)
        step = unet_step(pipe)
        config = ServerConfig(models=[models], outputs=Path(temp) / "outputs")
        print("whole jobs", file=sys.stderr)
        with running_server(config) as server, Client(url(server), name="bench") as client:
            whole = jobs(client)
    result = {
        "model": {"architecture": "SD1.5, UNet at half width", "unet_blocks": UNET_BLOCKS,
                  "unet_parameters": sum(p.numel() for p in pipe.unet.parameters()), "weights": "random"},
        "size": [SIDE, SIDE],
        "cfg_scale": CFG,
        "regions": len(COVERAGE),
        "device": "cpu",
        "threads": THREADS,
        "per_step": step,
        "whole_job": whole,
        "target_ratio": TARGET_RATIO,
        "meets_target": step["median_ratio"] <= TARGET_RATIO
        and whole["cached_prompts"]["median_ratio"] <= TARGET_RATIO,
        "bench_seconds": round(time.monotonic() - started, 1),
    }
    write_report(result, "regions")
    print(json.dumps({"per_step": step["median_ratio"], "cached_job": whole["cached_prompts"]["median_ratio"],
                      "new_prompts_job": whole["new_prompts"]["median_ratio"], "meets_target": result["meets_target"]},
                     indent=2))


if __name__ == "__main__":
    main()
