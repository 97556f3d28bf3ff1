"""Tiny autoencoders (TAESD) for fast decoding of live frames, where speed beats the last detail.

Users who have the weights put a diffusers `AutoencoderTiny` folder (madebyollin's `taesd` or
`taesdxl`) into a `vae-approx/` folder of a models folder; the registry finds them when it scans.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from .registry import Registry

log = logging.getLogger("underpaint.fast_decode")


class FastDecoders:
    """Tiny autoencoders per family, loaded on first use and kept."""

    def __init__(self, registry: Registry, device: torch.device, dtype: torch.dtype):
        self.registry = registry
        self.device = device
        self.dtype = dtype
        self._loaded: dict[Path, torch.nn.Module] = {}
        self._lock = threading.Lock()

    def get(self, family: str) -> torch.nn.Module | None:
        """The family's tiny autoencoder, or None when the user has none (the full VAE decodes then)."""
        folder = self.registry.tiny_decoder(family)
        if folder is None:
            return None
        with self._lock:
            if folder not in self._loaded:
                from diffusers import AutoencoderTiny

                log.info("loading fast decoder %s for %s", folder.name, family)
                self._loaded[folder] = AutoencoderTiny.from_pretrained(
                    folder, torch_dtype=self.dtype, local_files_only=True, use_safetensors=True
                ).to(self.device).eval()
            return self._loaded[folder]
