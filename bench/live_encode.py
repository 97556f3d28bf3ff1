"""Encoding only what a stroke changed (server/imaging/changes.py): the numbers behind its margin and
bound, and the seconds it saves.

1. sweep        a stroke (a 24 x 12 line, 5 px wide) in the middle and in the corner of a 256 px
                canvas of flat shapes, encoded by patch at margins of 8 to 64 px (the reach fixed)
                and at reaches of 0 to 24 px (the margin fixed), against a whole encode of the
                stroked canvas: the ring's error (what the server checks), the patched latents'
                largest and mean error, and the decoded pixels' (by the same coder). Coders: the
                test models' (testing/tiny_models.py: a VAE with attention, a tiny autoencoder),
                the demo model's VAE (trained; no attention, group norms) and TAESD's architecture
                (random weights). Errors in the UNet's latent space, and as a share of the previous
                latents' standard deviation.
2. calibration  what the bound means in pixels: the demo model's trained VAE decoder on latents
                whose one-latent ring around a box is off by up to BOUND (uniform), or by exactly
                +-BOUND (random signs).
3. timing       a live session's start picture encoded whole, then again with the stroke
                (sessions.Encoder: by patch), at 512 and 1024 px, by TAESD's architecture with
                random weights (what live frames of an SD1.5-sized model use; testing/full_size.py);
                medians of --rounds. Also the full SD1.5-sized VAE (random weights) at 512 px:
                whole, and what a patch it is never given would measure at its ring and cost.
                Wall and CPU seconds of this process, one torch thread by default.

Run: python -m bench.live_encode [--rounds N] [--threads N]  -> bench/results/live_encode.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor

from bench.report import write_report
from server.imaging import changes
from server.imaging.latents import Coder, FullVAE, TinyCoder
from server.models import tiny_autoencoders
from server.models.demo import MODEL_DIR
from server.models.loading import CONFIGS
from server.models.tiny_autoencoders import TinyAutoencoder
from server.sessions import LiveSessions
from testing.full_size import write_random_taesd
from testing.live_encode import shapes, stroked
from testing.tiny_models import tiny_autoencoder, tiny_pipeline

SWEEP_SIDE = 256
MARGINS = (8, 16, 24, 32, 48, 64)
REACHES = (0, 8, 16, 24)
STROKES = {"middle": (120, 118), "corner": (3, 3)}
TIMING_SIDES = (512, 1024)


def coder_pipe(vae: Any) -> SimpleNamespace:
    """What a Coder reads of a pipeline, for a VAE without the rest of its model."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    return SimpleNamespace(vae=vae, image_processor=VaeImageProcessor(vae_scale_factor=scale),
                           vae_scale_factor=scale, unet=SimpleNamespace(dtype=vae.dtype))


def sd15_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS / "sd15" / "vae")).eval()


def taesd(folder: Path) -> TinyAutoencoder:
    path = write_random_taesd(folder)
    return TinyAutoencoder("taesd", tiny_autoencoders.load(path, torch.device("cpu"), torch.float32))


def sweep_coders(demo: SimpleNamespace, taesd_module: TinyAutoencoder) -> dict[str, Coder]:
    toy = tiny_pipeline("sd15")
    return {
        "test VAE (random, attention)": FullVAE(toy),
        "test tiny autoencoder (random)": TinyCoder(toy, TinyAutoencoder("toy", tiny_autoencoder().eval())),
        "demo VAE (trained)": FullVAE(demo),
        "TAESD architecture (random)": TinyCoder(demo, taesd_module),
    }


def crop(picture: PIL.Image.Image, area: Any) -> PIL.Image.Image:
    return picture.crop((area.x, area.y, area.right, area.bottom))


def decoded(coder: Coder, latents: torch.Tensor) -> np.ndarray:
    return np.asarray(coder.decode(latents)[0]).astype(int)


def patch_errors(coder: Coder, before: PIL.Image.Image, after: PIL.Image.Image, previous: torch.Tensor,
                 whole: torch.Tensor, whole_pixels: np.ndarray, reach: int, margin: int) -> dict[str, Any]:
    """A patch of `after` at `reach` and `margin` against its whole encode."""
    box = changes.changed_box(np.asarray(before), np.asarray(after))
    patch = changes.patch_for(box, after.width, after.height, coder.scale, reach, margin)
    part = coder.encode(crop(after, patch.encoded))
    ring = changes.ring_error(previous, part, patch, coder.scale)
    patched = changes.pasted(previous, part, patch, coder.scale)
    error = (patched - whole).abs()
    pixels = np.abs(decoded(coder, patched) - whole_pixels)
    std = float(previous.std())
    return {"reach": reach, "margin": margin, "encoded_share": round(patch.share(after.width, after.height), 4),
            "ring_error": round(ring, 6), "ring_error_std": round(ring / std, 5), "accepted": ring <= changes.BOUND,
            "latents_max": round(float(error.max()), 6), "latents_max_std": round(float(error.max()) / std, 5),
            "latents_mean_std": round(float(error.mean()) / std, 6),
            "pixels_max": int(pixels.max()), "pixels_mean": round(float(pixels.mean()), 4)}


def sweep(coders: dict[str, Coder]) -> dict[str, Any]:
    before = shapes(SWEEP_SIDE, SWEEP_SIDE)
    out: dict[str, Any] = {}
    for name, coder in coders.items():
        previous = coder.encode(before)
        out[name] = {"latents_std": round(float(previous.std()), 4)}
        for where, (x, y) in STROKES.items():
            after = stroked(before, x, y)
            whole = coder.encode(after)
            whole_pixels = decoded(coder, whole)
            out[name][where] = {
                "margins": [patch_errors(coder, before, after, previous, whole, whole_pixels, changes.REACH, margin)
                            for margin in MARGINS],
                "reaches": [patch_errors(coder, before, after, previous, whole, whole_pixels, reach, changes.MARGIN)
                            for reach in REACHES],
            }
            print(name, where, flush=True)
    return out


def calibration(demo: SimpleNamespace) -> dict[str, Any]:
    """The demo VAE decoder's pixels where a one-latent ring around a 6 x 6 latent box is off by BOUND."""
    coder = FullVAE(demo)
    latents = coder.encode(shapes(SWEEP_SIDE, SWEEP_SIDE))
    base = decoded(coder, latents)
    ring = torch.zeros(latents.shape[-2:], dtype=torch.bool)
    ring[10:18, 10:18] = True
    ring[11:17, 11:17] = False
    generator = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {"bound": changes.BOUND, "latents_std": round(float(latents.std()), 4)}
    for kind in ("uniform", "signs"):
        noise = torch.rand(latents.shape, generator=generator) * 2 - 1
        off = changes.BOUND * (noise if kind == "uniform" else noise.sign())
        pixels = np.abs(decoded(coder, torch.where(ring, latents + off, latents)) - base)
        near = pixels[64:160, 64:160]  # the ring's pixels and what its latents reach
        out[kind] = {"pixels_max": int(pixels.max()), "pixels_mean_near": round(float(near.mean()), 4)}
    return out


def seconds(call: Any, *args: Any) -> tuple[Any, float, float]:
    """call(*args), its wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def timing(coder: Coder, side: int, rounds: int) -> dict[str, Any]:
    """The start picture encoded whole by a live session's encoder, then with the stroke (by patch)."""
    before = shapes(side, side)
    after = stroked(before, side // 2 - 10, side // 2 - 6)
    samples: dict[str, list[float]] = {key: [] for key in ("whole_wall", "whole_cpu", "tiles_wall", "tiles_cpu",
                                                          "find_change_wall")}
    ring = []
    for _ in range(rounds):
        sessions = LiveSessions()
        encoder = sessions.encoder((0, "bench"), "bench", coder)
        _, wall, cpu = seconds(encoder, before)
        samples["whole_wall"].append(wall), samples["whole_cpu"].append(cpu)
        encoder = sessions.encoder((0, "bench"), "bench", coder)
        _, wall, cpu = seconds(encoder, after)
        assert encoder.way == "tiles", encoder.way
        samples["tiles_wall"].append(wall), samples["tiles_cpu"].append(cpu)
        ring.append(encoder.ring_error)
        _, wall, _ = seconds(changes.changed_box, np.asarray(before), np.asarray(after))
        samples["find_change_wall"].append(wall)
    box = changes.changed_box(np.asarray(before), np.asarray(after))
    patch = changes.patch_for(box, side, side, coder.scale)
    out: dict[str, Any] = {key: median(values) for key, values in samples.items()}
    out |= {"encoded": [patch.encoded.width, patch.encoded.height], "encoded_share": round(patch.share(side, side), 4),
            "tiles_over_whole_cpu": round(out["tiles_cpu"] / out["whole_cpu"], 4),
            "saved_cpu_s": round(out["whole_cpu"] - out["tiles_cpu"], 4), "ring_error": round(max(ring), 7)}
    return out


def full_vae_timing(side: int) -> dict[str, Any]:
    """The SD1.5-sized VAE: a whole encode, and a patch's ring error and cost (it is never patched)."""
    coder = FullVAE(coder_pipe(sd15_vae()))
    before = shapes(side, side)
    after = stroked(before, side // 2 - 10, side // 2 - 6)
    previous, wall, cpu = seconds(coder.encode, before)
    patch = changes.patch_for(changes.changed_box(np.asarray(before), np.asarray(after)), side, side, coder.scale)
    part, part_wall, part_cpu = seconds(coder.encode, crop(after, patch.encoded))
    ring = changes.ring_error(previous, part, patch, coder.scale)
    return {"whole_wall": round(wall, 4), "whole_cpu": round(cpu, 4), "patch_wall": round(part_wall, 4),
            "patch_cpu": round(part_cpu, 4), "ring_error": round(ring, 5),
            "ring_error_std": round(ring / float(previous.std()), 4), "would_be_accepted": ring <= changes.BOUND}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = taesd(Path(tmp))
    demo = coder_pipe(AutoencoderKL.from_pretrained(MODEL_DIR / "vae").eval())
    report: dict[str, Any] = {
        "constants": {"reach": changes.REACH, "margin": changes.MARGIN, "ring": changes.RING, "bound": changes.BOUND,
                      "max_share": changes.MAX_SHARE},
        "hardware": f"{platform.machine()}, {args.threads} torch thread(s)",
        "sweep": sweep(sweep_coders(demo, tiny)),
        "calibration": calibration(demo),
    }
    report["timing"] = {"taesd": {str(side): timing(TinyCoder(demo, tiny), side, args.rounds) for side in TIMING_SIDES},
                        "sd15_vae_512": full_vae_timing(512)}
    write_report(report, "live_encode", show=True)


if __name__ == "__main__":
    main()
