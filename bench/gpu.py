"""How fast the server's models run on a GPU, in the precisions and with the options it offers.

For an SD1.5-sized UNet at 512 px and an SDXL-sized one at 1024 px (random weights, from the configs
that ship with the server), with classifier-free guidance (a batch of 2): denoising steps per second
in fp16, bf16 (where the GPU has it) and fp32; with channels-last; with torch.compile (and how long
the first, compiling step takes); peak GPU memory of each. Then the VAE decode at each size, in the
precision the server runs it (SDXL's in fp32 under fp16, where it overflows). Every model is made
ready by the server's own `prepare` (server/models/loading.py); attention is PyTorch's SDPA.

Without a GPU it measures what applies on the CPU instead (the SD1.5-sized UNet at 256 px in fp32
and bf16, with channels-last, and with torch.compile) and its report says that the GPU figures are
pending: they come from a run on a machine with a CUDA GPU.

Run: python -m bench.gpu [--skip-compile] [--runs N] [--threads N]  -> bench/results/gpu.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from bench.report import write_report
from server.models.loading import CONFIGS, Acceleration, prepare

TEXT_WIDTH = {"sd15": 768, "sdxl": 2048}
SDXL_POOLED = 1280
PENDING = ("none on the machine that ran this: GPU figures pending (run `python -m bench.gpu` where CUDA "
           "is available); the figures below are the CPU's")


def models(family: str, dtype: torch.dtype, device: torch.device, acceleration: Acceleration) -> SimpleNamespace:
    """The family's UNet and VAE with random weights, made ready as the server makes a loaded model."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS / family / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS / family / "vae"))
    pair = SimpleNamespace(unet=unet.to(device, dtype).eval(), vae=vae.to(device, dtype).eval())
    prepare(pair, family, dtype, acceleration)
    return pair


def unet_inputs(family: str, side: int, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    latents = torch.randn(2, 4, side // 8, side // 8, device=device, dtype=dtype)
    inputs = {"sample": latents, "timestep": torch.tensor([500, 500], device=device),
              "encoder_hidden_states": torch.randn(2, 77, TEXT_WIDTH[family], device=device, dtype=dtype)}
    if family == "sdxl":
        time_ids = torch.tensor([[side, side, 0, 0, side, side]] * 2, device=device, dtype=dtype)
        inputs["added_cond_kwargs"] = {"text_embeds": torch.randn(2, SDXL_POOLED, device=device, dtype=dtype),
                                       "time_ids": time_ids}
    return inputs


def timed(call: Callable[[], object], device: torch.device, runs: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of `runs` calls after it)."""

    def once() -> float:
        started = time.perf_counter()
        with torch.no_grad():
            call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    first = once()
    return first, statistics.median(once() for _ in range(runs))


def peak_memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def measure_unet(family: str, side: int, dtype: torch.dtype, acceleration: Acceleration, device: torch.device,
                 runs: int) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    pair = models(family, dtype, device, acceleration)
    inputs = unet_inputs(family, side, dtype, device)
    first, step = timed(lambda: pair.unet(**inputs), device, runs)
    return {"steps_per_s": round(1 / step, 3), "step_s": round(step, 4), "first_step_s": round(first, 2),
            **peak_memory(device)}


def measure_vae(family: str, side: int, dtype: torch.dtype, device: torch.device, runs: int) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    pair = models(family, dtype, device, Acceleration())
    latents = torch.randn(1, 4, side // 8, side // 8, device=device, dtype=pair.vae.dtype)
    _, decode = timed(lambda: pair.vae.decode(latents), device, runs)
    return {"vae_dtype": str(pair.vae.dtype).removeprefix("torch."), "decode_s": round(decode, 4),
            **peak_memory(device)}


def variants(device: torch.device, skip_compile: bool) -> list[tuple[str, torch.dtype, Acceleration]]:
    if device.type == "cuda":
        half = [("fp16", torch.float16, Acceleration())]
        if torch.cuda.is_bf16_supported():
            half.append(("bf16", torch.bfloat16, Acceleration()))
        found = [*half, ("fp32", torch.float32, Acceleration()),
                 ("fp16+channels_last", torch.float16, Acceleration(channels_last=True))]
        compiled = [("fp16+channels_last+compile", torch.float16, Acceleration(channels_last=True, compile=True))]
    else:
        found = [("fp32", torch.float32, Acceleration()), ("bf16", torch.bfloat16, Acceleration()),
                 ("fp32+channels_last", torch.float32, Acceleration(channels_last=True))]
        compiled = [("fp32+compile", torch.float32, Acceleration(compile=True))]
    return found + ([] if skip_compile else compiled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, without a GPU")
    args = parser.parse_args()
    report: dict[str, Any] = {"torch": torch.__version__,
                              "sdpa": hasattr(torch.nn.functional, "scaled_dot_product_attention"),
                              "compile": "not measured (--skip-compile)" if args.skip_compile else "measured",
                              "runs": args.runs}
    if torch.cuda.is_available():
        device = torch.device("cuda")
        report["gpu"] = torch.cuda.get_device_name()
        sizes = (("sd15", 512), ("sdxl", 1024))
    else:
        report["gpu"] = PENDING
        device = torch.device("cpu")
        torch.set_num_threads(args.threads)
        report["cpu"] = f"{platform.processor() or platform.machine()}, {args.threads} torch threads"
        sizes = (("sd15", 256),)
    for family, side in sizes:
        found: dict[str, Any] = {"side": side, "unet_cfg_batch_2": {}}
        for name, dtype, acceleration in variants(device, args.skip_compile):
            found["unet_cfg_batch_2"][name] = measure_unet(family, side, dtype, acceleration, device, args.runs)
            print(family, name, found["unet_cfg_batch_2"][name], flush=True)
        if device.type == "cuda":
            found["vae_decode"] = {name: measure_vae(family, side, dtype, device, args.runs)
                                   for name, dtype in (("fp16", torch.float16), ("fp32", torch.float32))}
        report[f"{family}_{side}"] = found
    write_report(report, "gpu", show=True)


if __name__ == "__main__":
    main()
