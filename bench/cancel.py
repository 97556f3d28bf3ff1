"""How soon a cancel lands while a denoising step runs, by picture size.

A txt2img job is sent, cancelled a few seconds into its first step, and the time from sending
`cancel` to receiving `cancelled` is measured, several times at each size:
  (a) the demo model (a small UNet with attention at full latent resolution) at 512², 1024², 2048²
      and 4096²;
  (b) a Stable Diffusion 1.5-sized pipeline (860 M-parameter UNet, random weights, as in
      bench/overhead.py) at 512² and 1024²; at 2048² one of its steps takes the better part of an
      hour on this CPU, so it is measured with --sd15-2048 only.
Beside each latency is how long one step (one UNet call on the prompt and the negative prompt)
takes at that size, measured where that takes less than a few minutes: before cancels were checked
inside the UNet, a cancel waited for the step to end, up to that long.

Run: python -m bench.cancel [--skip-sd15] [--sd15-2048] → bench/results/cancel.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch

from bench.overhead import random_sd15
from bench.report import write_report
from server.config import ServerConfig
from shared.client import Client
from shared.messages import Cancel, Cancelled, Generate, Queued
from testing.serving import running_server, url

# Seconds after `queued` at which each cancel is sent: inside the first step at every size measured.
OFFSETS = (1.5, 3.0, 4.5)


def measure(server, model: str, size: int, time_a_step: bool) -> dict:
    latencies = []
    with Client(url(server), name="bench") as client:
        client.generate(Generate(id="warm", mode="txt2img", model=model, prompt="warm up", width=64, height=64,
                                 steps=1))  # loads the model
        for offset in OFFSETS:
            job = Generate(id=uuid.uuid4().hex, mode="txt2img", model=model, prompt="a lighthouse at dusk",
                           width=size, height=size, steps=3, seed=1)
            client.send(job)
            while not isinstance(client.receive(timeout=60), Queued):
                pass
            time.sleep(offset)
            asked = time.perf_counter()
            client.send(Cancel(id=job.id))
            while not isinstance(message := client.receive(timeout=3600), Cancelled) or message.id != job.id:
                pass
            latencies.append(time.perf_counter() - asked)
    report = {"size": size, "latencies_s": [round(x, 3) for x in latencies],
              "median_s": round(statistics.median(latencies), 3), "max_s": round(max(latencies), 3),
              "one_step_s": round(one_step(server, model, size), 1) if time_a_step else None}
    print(model, report, flush=True)
    return report


def one_step(server, model: str, size: int) -> float:
    """Seconds of one UNet call at `size` with classifier-free guidance (two samples), on the server's
    loaded model."""
    unet = server.cache.get(server.registry.get(model)).unet
    latents = torch.randn(2, unet.config.in_channels, size // 8, size // 8)
    context = torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        started = time.perf_counter()
        unet(latents, torch.tensor([500]), encoder_hidden_states=context)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-sd15", action="store_true", help="only the demo model")
    parser.add_argument("--sd15-2048", action="store_true", help="also the SD1.5-sized UNet at 2048²")
    args = parser.parse_args()
    report: dict = {"threads": torch.get_num_threads(), "offsets_s": list(OFFSETS)}
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "none"
        empty.mkdir()
        with running_server(ServerConfig(models=[empty], outputs=Path(tmp) / "out")) as server:
            demo = server.registry.checkpoints()[0].name
            report["demo"] = [measure(server, demo, size, size <= 1024) for size in (512, 1024, 2048, 4096)]
        if not args.skip_sd15:
            models = Path(tmp) / "models"
            random_sd15(models)
            with running_server(ServerConfig(models=[models], outputs=Path(tmp) / "out")) as server:
                sizes = (512, 1024, 2048) if args.sd15_2048 else (512, 1024)
                report["sd15_size"] = [measure(server, "random-sd15", size, size <= 512) for size in sizes]
    write_report(report, "cancel", show=True)


if __name__ == "__main__":
    main()
