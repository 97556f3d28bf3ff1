"""Where a live frame's time goes, with the full VAE and with the tiny autoencoder: UNet, encode,
decode and the rest.

A live frame as the plugin sends it, img2img of a 512 px canvas in 4 steps at strength 0.5 (two
denoising steps; CFG 2 and Euler, the few-step settings of docs/live.md), served by a real server in
this process with an SD1.5-sized model (random weights) and TAESD's architecture (random weights)
in vae-approx/ (testing/full_size.py). Forward hooks time the modules: the UNet; encode (the VAE's
encoder and quant conv, or the tiny encoder); decode (post-quant conv and the VAE's decoder, or the
tiny decoder). Other = the frame, from sending the request to reading its result, minus those. Each
frame has a canvas of its own, so each is encoded; rounds alternate which coder goes first. Also
timed: a frame whose canvas did not change (the prompt did: nothing to encode), and the finalize of
a tiny frame (Apply: one full decode and nothing else). Wall seconds and CPU seconds of this process.

Targets: with the tiny autoencoder the non-UNet share of a frame <= 10%, and the frame <= 0.6x the
full-VAE frame; finalize costs one full decode and nothing more (no UNet call, no encode).

Run: python -m bench.live_cost [--rounds N] [--threads N]  -> bench/results/live_cost.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.report import write_report
from server.config import ServerConfig
from shared.client import Client
from shared.messages import Image, Live
from testing.full_size import SD15_NAME, write_random_sd15, write_random_taesd
from testing.serving import running_server, url

SIDE = 512
FRAME = {"mode": "img2img", "model": SD15_NAME, "strength": 0.5, "steps": 4, "cfg_scale": 2.0, "scheduler": "euler",
         "seed": 3}
PARTS = ("unet", "encode", "decode")
TARGETS = {"tiny_non_unet_share": 0.10, "tiny_over_full": 0.6}


@dataclass
class Clock:
    """Wall and CPU seconds spent inside hooked modules, per part."""

    wall: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))

    def hook(self, part: str, modules: list[torch.nn.Module]) -> None:
        started: list[tuple[float, float]] = []

        def before(*_: Any) -> None:
            started.append((time.perf_counter(), time.process_time()))

        def after(*_: Any) -> None:
            wall, cpu = started.pop()
            self.wall[part] += time.perf_counter() - wall
            self.cpu[part] += time.process_time() - cpu
            self.calls[part] += 1

        for module in modules:
            module.register_forward_pre_hook(before)
            module.register_forward_hook(after)

    def reset(self) -> None:
        self.__init__()


@contextmanager
def timed(clock: Clock) -> Iterator[dict[str, float]]:
    """The parts' seconds of what runs inside, with the whole and the rest, in wall and CPU seconds."""
    clock.reset()
    out: dict[str, Any] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    yield out
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out["wall"] = {"frame": wall, **clock.wall, "other": wall - sum(clock.wall.values())}
    out["cpu"] = {"frame": cpu, **clock.cpu, "other": cpu - sum(clock.cpu.values())}
    out["calls"] = dict(clock.calls)


def canvas(shade: int) -> Image:
    """A canvas of its own per frame: a gradient, shifted by `shade`."""
    row = bytes(v for x in range(SIDE) for v in ((x + shade) % 256, shade % 256, (3 * x) % 256, 255))
    return Image(width=SIDE, height=SIDE, format="rgba8", data=row * SIDE)


def medians(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for unit in ("wall", "cpu"):
        seconds = {part: round(statistics.median(s[unit][part] for s in samples), 4) for part in samples[0][unit]}
        frame = seconds["frame"]
        out[unit] = {"seconds": seconds,
                     "share": {part: round(value / frame, 4) for part, value in seconds.items() if part != "frame"}}
    out["calls"] = samples[0]["calls"]
    out["runs"] = len(samples)
    return out


def run(rounds: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {"full": [], "tiny": [], "tiny_unchanged_canvas": [], "finalize": []}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        write_random_sd15(models)
        write_random_taesd(models)
        with running_server(ServerConfig(models=[models], outputs=Path(tmp) / "outputs")) as server, \
                Client(url(server), name="bench") as client:
            shade = iter(range(1, 10**6))
            canvases: dict[str, Image] = {}  # the last canvas of each session (one per coder)

            def frame(autoencoder: str, prompt: str = "a lighthouse at dusk", new_canvas: bool = True) -> Any:
                if new_canvas:
                    canvases[autoencoder] = canvas(next(shade))
                return client.generate(Live(id=uuid.uuid4().hex, session=autoencoder, prompt=prompt,
                                            image=canvases[autoencoder], autoencoder=autoencoder, **FRAME))

            frame("full"), frame("tiny")  # loads the model and both coders
            entry = server.registry.get(SD15_NAME)
            pipe, tiny = server.cache.get(entry), server.generator.tiny_autoencoders.get(entry).module
            clock = Clock()
            clock.hook("unet", [pipe.unet])
            clock.hook("encode", [pipe.vae.encoder, pipe.vae.quant_conv, tiny.encoder])
            clock.hook("decode", [pipe.vae.post_quant_conv, pipe.vae.decoder, tiny.decoder])
            for index in range(rounds):
                for kind in ("full", "tiny") if index % 2 == 0 else ("tiny", "full"):
                    with timed(clock) as sample:
                        frame(kind)
                    samples[kind].append(sample)
                with timed(clock) as sample:
                    latest = frame("tiny", prompt="a lighthouse at dawn", new_canvas=False)
                assert latest.info["latents_reused"]
                samples["tiny_unchanged_canvas"].append(sample)
                with timed(clock) as sample:
                    client.finalize(latest.id)
                samples["finalize"].append(sample)
                print(index, {kind: round(s[-1]["wall"]["frame"], 2) for kind, s in samples.items()}, flush=True)
    return {kind: medians(s) for kind, s in samples.items()}


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The targets' figures, in wall and CPU seconds: the non-UNet share of each frame, the tiny frame
    against the full one, and what Apply's finalize costs beyond its one full decode."""
    full, tiny, finalize = results["full"], results["tiny"], results["finalize"]
    out: dict[str, Any] = {}
    for unit in ("wall", "cpu"):
        out[unit] = {
            "tiny_non_unet_share": round(1 - tiny[unit]["share"]["unet"], 4),
            "full_non_unet_share": round(1 - full[unit]["share"]["unet"], 4),
            "tiny_over_full": round(tiny[unit]["seconds"]["frame"] / full[unit]["seconds"]["frame"], 4),
            "finalize_beyond_its_decode_s": round(finalize[unit]["seconds"]["frame"]
                                                  - finalize[unit]["seconds"]["decode"], 4),
        }
    out["finalize_unet_and_encode_calls"] = finalize["calls"]["unet"] + finalize["calls"]["encode"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; with one, CPU seconds count no thread spinning in wait")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run(args.rounds)
    report: dict[str, Any] = {"frame": {"side": SIDE, **FRAME}, "threads": args.threads, "targets": TARGETS,
                              "results": results, "headline": headline(results)}
    write_report(report, "live_cost", show=True)


if __name__ == "__main__":
    main()
