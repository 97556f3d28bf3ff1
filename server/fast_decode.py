"""Fast decoding with a tiny autoencoder (TAESD), for live frames where speed beats the last detail.

Users who have the weights put a diffusers `AutoencoderTiny` folder (madebyollin's `taesd` or
`taesdxl`) into a `vae-approx/` folder of a models folder (A1111's `VAE-approx/` and ComfyUI's
`vae_approx/` work too). TAESD and TAESDXL share one architecture, so unlike checkpoints their
family can only come from the name: a name containing "xl" is for SDXL.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import PIL.Image
import torch

log = logging.getLogger("underpaint.fast_decode")

FOLDERS = ("vae-approx", "VAE-approx", "vae_approx")


def find(folders: Sequence[Path]) -> dict[str, Path]:
    """family -> the first AutoencoderTiny folder found for it."""
    found: dict[str, Path] = {}
    for root in folders:
        for name in FOLDERS:
            parent = root / name
            if not parent.is_dir():
                continue
            for candidate in sorted(parent.iterdir()):
                if _is_tiny_autoencoder(candidate):
                    found.setdefault("sdxl" if "xl" in candidate.name.lower() else "sd15", candidate)
    return found


def _is_tiny_autoencoder(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return config.get("_class_name") == "AutoencoderTiny" and any(folder.glob("*.safetensors"))


class FastDecoders:
    """Tiny autoencoders per family, loaded on first use and kept."""

    def __init__(self, folders: Sequence[Path], device: torch.device, dtype: torch.dtype):
        self.folders = list(folders)
        self.device = device
        self.dtype = dtype
        self._loaded: dict[str, torch.nn.Module] = {}
        self._lock = threading.Lock()

    def get(self, family: str) -> torch.nn.Module | None:
        """The family's tiny autoencoder, or None when the user has none (the full VAE decodes then)."""
        with self._lock:
            if family not in self._loaded:
                folder = find(self.folders).get(family)
                if folder is None:
                    return None
                from diffusers import AutoencoderTiny

                log.info("loading fast decoder %s for %s", folder.name, family)
                self._loaded[family] = AutoencoderTiny.from_pretrained(
                    folder, torch_dtype=self.dtype, local_files_only=True, use_safetensors=True
                ).to(self.device).eval()
            return self._loaded[family]


@torch.no_grad()
def decode(decoder: torch.nn.Module, latents: torch.Tensor) -> list[PIL.Image.Image]:
    """Latents of the UNet's (scaled) space to pictures."""
    latents = latents.to(decoder.device, decoder.dtype) / decoder.config.scaling_factor
    pixels = decoder.decode(latents).sample
    pixels = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [PIL.Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in pixels]
