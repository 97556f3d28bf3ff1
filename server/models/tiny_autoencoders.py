"""Tiny autoencoders (TAESD, TAESDXL, the demo model's own) for live frames, where speed beats the
last detail: they encode the canvas and decode the result several times faster than a full VAE.

The installer puts madebyollin's `taesd` and `taesdxl` weights into `vae-approx/` of the models
folder; a diffusers `AutoencoderTiny` folder there works too, as does one of the kind the demo model's
own is trained as (autoencoder_tiny_kl.py: a decoder of the VAE's kind). The registry finds them when
it scans (registry.py) and says which fits a model.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderTiny
from safetensors.torch import load_file

from .autoencoder_tiny_kl import AutoencoderTinyKL
from .entry import ModelEntry
from .headers import read_json
from .registry import Registry

log = logging.getLogger("underpaint.tiny_autoencoders")

# By the `_class_name` of a folder's config (identify.TINY_AUTOENCODER_CLASSES).
CLASSES: dict[str, type[AutoencoderTiny | AutoencoderTinyKL]] = {
    "AutoencoderTiny": AutoencoderTiny, "AutoencoderTinyKL": AutoencoderTinyKL}


@dataclass(frozen=True)
class TinyAutoencoder:
    name: str  # the file's or folder's name, as `info` reports it
    module: AutoencoderTiny | AutoencoderTinyKL  # called alike: encode(pixels).latents, decode(latents).sample


def load(path: Path, device: torch.device, dtype: torch.dtype) -> AutoencoderTiny | AutoencoderTinyKL:
    """A folder with its config, or TAESD's weights file alone (its config is the class's defaults;
    a file of another architecture fails here, naming the tensors that do not fit)."""
    if path.is_dir():
        kind = CLASSES[read_json(path / "config.json")["_class_name"]]  # one of them: identify.py found it
        module = kind.from_pretrained(path, torch_dtype=dtype, local_files_only=True, use_safetensors=True)
    else:
        module = AutoencoderTiny()
        module.load_state_dict(load_file(path), strict=True)
        if dtype != module.dtype:
            module.to(dtype)
    return module.to(device).eval()


class TinyAutoencoders:
    """The tiny autoencoder of each model's latent space, loaded on first use and kept (a few MB each)."""

    def __init__(self, registry: Registry, device: torch.device, dtype: torch.dtype):
        self.registry = registry
        self.device = device
        self.dtype = dtype
        self._loaded: dict[Path, TinyAutoencoder | None] = {}
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> TinyAutoencoder | None:
        """The one for `entry`, or None where there is none or it cannot be loaded: the full VAE is used
        then, so a damaged file slows live frames down but never stops them."""
        path = self.registry.tiny_autoencoder(entry)
        if path is None:
            return None
        with self._lock:
            if path not in self._loaded:
                log.info("loading tiny autoencoder %s for %s", path.name, entry.name)
                try:
                    module = load(path, self.device, self.dtype)
                except Exception:
                    log.exception("tiny autoencoder %s cannot be loaded; the full VAE is used instead", path)
                    module = None
                name = path.stem if path.is_file() else path.name
                self._loaded[path] = TinyAutoencoder(name, module) if module is not None else None
            return self._loaded[path]
