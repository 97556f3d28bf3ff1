"""What reference pictures cost: jobs with an IP-Adapter against the same job without, served, in CPU seconds
of the serving process (bench/overhead.py's `served`), on the random-weight SD1.5-sized model with a
random-weight plain IP-Adapter of SD1.5's architecture; and what the image-feature cache saves a live
session's frame: one encoding of the picture by a random-weight CLIP ViT-H/14 (the encoder SD1.5's
adapters read with), against finding its features in the cache.

Per step: (job of 6 steps - job of 2 steps) / 4, which leaves out what every job pays once (the text
encoder, the picture's features, the VAE, the reply). The served jobs read pictures with a small encoder of
ViT-H's output width: what a step costs does not depend on it. Rounds interleave the variants. Other work on
the machine moves served CPU seconds by tens of percent between runs, so the UNet's own call is timed too,
in this process, without and with the reference, interleaved (`unet_call_s_median`).
Targets: one reference per step and per UNet call <= 1.15x plain (style, acting in a few blocks only, is
reported beside them).

Run: python -m bench.reference [--rounds N] [--unet-rounds N] [--size PX]  -> bench/results/reference.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from bench.overhead import per_step as step_costs
from bench.overhead import served, step_report
from bench.report import write_report
from shared.client import Client
from shared.messages import Image, Live, Reference
from testing.full_size import SD15_NAME, write_random_sd15
from testing.processes import ServerProcess

TARGETS = {"one_per_step": 1.15, "one_per_unet_call": 1.15}
STEPS = (2, 6)
VIT_H_PROJECTION = 1024


def write_random_adapter(models: Path) -> None:
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from testing.tiny_references import ipadapter_for, tiny_clip_vision, write_clip_vision

    path = models / "ipadapter" / "random-ip-adapter_sd15.safetensors"
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(models / "checkpoints" / SD15_NAME / "unet")
    save_file(ipadapter_for(unet, "plain", seed=1, embeds=VIT_H_PROJECTION), str(path))
    write_clip_vision(tiny_clip_vision(projection=VIT_H_PROJECTION, image_size=224),
                      models / "clip_vision" / "small-clip-vision.safetensors")


def painting(size: int, seed: int = 0) -> Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return Image(width=size, height=size, format="rgba8", data=pixels.tobytes())


def encoder_seconds(rounds: int) -> dict[str, float]:
    """Seconds one picture's image embedding takes from a random-weight ViT-H/14, and from the cache."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from server.models.identify import CLIP_VISION_CONFIG_FOLDER
    from server.models.ipadapters import Encoder, IPAdapters
    from server.models.registry import Registry

    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig.from_json_file(CLIP_VISION_CONFIG_FOLDER / "vit-h-14.json"))
    encoder = Encoder("random-vit-h", "random-vit-h", model.eval())
    adapters = IPAdapters(Registry([]), torch.device("cpu"), torch.float32)
    encoded, cached = [], []
    for index in range(rounds):
        picture = PIL.Image.fromarray(np.random.default_rng(index).integers(0, 256, (512, 512, 3), dtype=np.uint8))
        for times in (encoded, cached):
            started = time.perf_counter()
            _, reused = adapters.picture_features(encoder, picture, "embeds")
            times.append(time.perf_counter() - started)
            assert reused == (times is cached)
    return {"encode_s": statistics.median(encoded), "cached_s": statistics.median(cached)}


def unet_seconds(models: Path, size: int, rounds: int) -> dict[str, float]:
    """Median seconds of one call of the SD1.5-sized UNet on a guided batch (2 latents) in this process, without
    and with one reference acting in every cross-attention layer, the two interleaved: a step's UNet work
    without the serving around it."""
    import types

    from diffusers import UNet2DConditionModel

    from server.conditioning import reference
    from server.models.identify import identify_file
    from server.models.ipadapters import IPAdapters
    from server.models.registry import Registry

    unet = UNet2DConditionModel.from_pretrained(models / "checkpoints" / SD15_NAME / "unet").eval()
    path = models / "ipadapter" / "random-ip-adapter_sd15.safetensors"
    adapter = IPAdapters(Registry([]), torch.device("cpu"), torch.float32).adapter(identify_file(path), "bench")
    with torch.no_grad():
        tokens = adapter.projection(torch.randn(2, VIT_H_PROJECTION))
    active = reference.ActiveReference("bench", "bench", "bench", "reference", 0.6, 0.0, 1.0, tokens, adapter,
                                       reference.block_weights(unet, "sd15", "reference"), None, False)
    references = reference.References([active], guided=True)
    pipe = types.SimpleNamespace(unet=unet, num_timesteps=1)
    latents, context = torch.randn(2, 4, size // 8, size // 8), torch.randn(2, 77, 768)
    times: dict[str, list[float]] = {"plain": [], "one": []}

    def call(name: str) -> None:
        started = time.perf_counter()
        with torch.no_grad(), reference.applied(pipe, references if name == "one" else None):
            unet(latents, 500, encoder_hidden_states=context)
        times[name].append(time.perf_counter() - started)

    call("plain")  # warms up
    times["plain"].clear()
    for index in range(rounds):
        for name in ("plain", "one") if index % 2 == 0 else ("one", "plain"):
            call(name)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unet-rounds", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        write_random_sd15(models)
        write_random_adapter(models)
        picture = painting(args.size)
        jobs = {"plain": [], "one": [Reference(image=picture)], "style": [Reference(image=picture, mode="style")]}
        with ServerProcess(models, Path(tmp) / "server", threads=1) as server, \
                Client(server.url, name="bench") as client:
            def job(name: str, steps: int) -> float:
                fields: dict[str, Any] = {"mode": "txt2img", "width": args.size, "height": args.size, "steps": steps,
                                          "reference": jobs[name]}
                return served(client, server, SD15_NAME, fields)["cpu_s"]

            # A live session's two frames with an unchanged reference: the second finds its features cached.
            live = [client.generate(Live(id=uuid.uuid4().hex, session="bench", mode="img2img", model=SD15_NAME,
                                         image=painting(args.size, seed=1), strength=0.5, steps=2, seed=i,
                                         reference=[Reference(image=picture)])).info["references"][0]
                    for i in range(2)]
            job("one", 2)  # loads the model, the adapter and the encoder
            median, per_step = step_costs(job, jobs, args.rounds, STEPS)
        unet = unet_seconds(models, args.size, args.unet_rounds)
    ratios = {f"{name}_per_step": per_step[name] / per_step["plain"] for name in ("one", "style")}
    encoder = encoder_seconds(args.rounds)
    ratios["one_per_unet_call"] = unet["one"] / unet["plain"]
    live_figures = {
        "unet_call_s_median": {name: round(value, 3) for name, value in unet.items()},
        "unet_rounds": args.unet_rounds,
        "live_features_reused": [item["features_reused"] for item in live],
        "vit_h_encode_s": round(encoder["encode_s"], 3),
        "vit_h_cached_s": round(encoder["cached_s"], 6),
        "live_encoder_s_saved_per_frame": round(encoder["encode_s"] - encoder["cached_s"], 3),
    }
    write_report(step_report(__doc__, args.size, args.rounds, median, per_step, ratios, TARGETS) | live_figures,
                 "reference", show=True)


if __name__ == "__main__":
    main()
