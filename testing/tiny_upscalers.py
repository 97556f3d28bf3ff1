"""Tiny random-weight upscaler models, built with spandrel's own architectures, laid out as a user's
models folder: `upscale_models/` as ComfyUI keeps them and `ESRGAN/` as A1111 does, in both file
formats the server reads, beside files it must refuse."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from server.models.upscalers import _spandrel

from .tiny_models import _ExplodesWhenUnpickled, _written

VERSION_MARKER = ".tiny-upscalers"


def tiny_esrgan(scale: int = 4) -> torch.nn.Module:
    """ESRGAN's RRDBNet with one block of 8 features (the real ones: 23 blocks of 64)."""
    _spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    return ESRGAN(num_filters=8, num_blocks=1, scale=scale).eval()


def tiny_swinir(scale: int = 2) -> torch.nn.Module:
    """SwinIR with one layer of one block, 12 features wide, windows of 4."""
    _spandrel()
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    return SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2.0,
                  upscale=scale, upsampler="pixelshuffle", resi_connection="1conv").eval()


def write_tiny_upscalers(root: Path) -> dict[str, Path]:
    """upscale_models/: tiny-esrgan-4x.safetensors, tiny-swinir-2x.pth (a plain state dict, as
    released .pth files are), armed.pth (a pickle that raises when unpickled), not-an-upscaler.safetensors;
    ESRGAN/: tiny-esrgan-2x.pth, wrapped in `params_ema` as BasicSR writes it."""
    comfy, a1111 = root / "upscale_models", root / "ESRGAN"
    paths = {
        "tiny-esrgan-4x": comfy / "tiny-esrgan-4x.safetensors",
        "tiny-swinir-2x": comfy / "tiny-swinir-2x.pth",
        "armed": comfy / "armed.pth",
        "not-an-upscaler": comfy / "not-an-upscaler.safetensors",
        "tiny-esrgan-2x": a1111 / "tiny-esrgan-2x.pth",
    }

    def write() -> None:
        comfy.mkdir(parents=True, exist_ok=True)
        a1111.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tiny_esrgan(4).state_dict().items()}, str(paths["tiny-esrgan-4x"]))
        torch.save(tiny_swinir(2).state_dict(), paths["tiny-swinir-2x"])
        torch.save({"params_ema": tiny_esrgan(2).state_dict()}, paths["tiny-esrgan-2x"])
        # torch.save pickles the object as it is: loading it with a full unpickle divides by zero.
        torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}, "trap": _ExplodesWhenUnpickled()},
                   paths["armed"])
        save_file({"weight": torch.zeros(3, 3)}, str(paths["not-an-upscaler"]))

    return _written(root, VERSION_MARKER, paths, write)
