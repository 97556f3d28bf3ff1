"""Points inside a model's forward pass where a running job can stop, and what its steps cost.

A denoising step at 2048² takes minutes on a CPU, so checking for cancel between steps is not
enough: each layer of the UNet's down, mid and up blocks (resnets, transformer blocks, samplers),
of the VAE's encoder and decoder (and their convolutions, which at full resolution take seconds
each) and of the text encoders checks before it runs, and large attention calls are sliced
(attention.py) with a check between slices. The hooks are installed once, when a model is loaded;
they do nothing unless the worker thread runs a job inside `checking()`.

The UNet's calls are also timed, per model and device (StepCosts), so a job's running time can be
estimated before it starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from .attention import SlicedAttention

Check = Callable[[], None]

# Layers of UNet blocks a check runs before; in the VAE, its convolutions too.
UNET_LAYERS = (ResnetBlock2D, BasicTransformerBlock, Downsample2D, Upsample2D)
VAE_LAYERS = (*UNET_LAYERS, torch.nn.Conv2d)

_running = threading.local()  # the check of the job this thread runs, if any


@contextmanager
def checking(check: Check) -> Iterator[None]:
    """Within the block, every check point of every model on this thread calls `check`, which raises
    to stop the job."""
    _running.check = check
    try:
        yield
    finally:
        _running.check = None


def checkpoint(*_: object) -> None:
    """A point where the job running on this thread may stop (a forward pre-hook, or between slices)."""
    check = getattr(_running, "check", None)
    if check is not None:
        check()


class StepCosts:
    """Seconds of UNet work per latent pixel of one image, per model and device: measured on every UNet
    call, averaged over the recent ones."""

    WEIGHT = 0.3  # of the newest measure in the running average

    def __init__(self) -> None:
        self._costs: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def record(self, model: str, device: str, seconds: float, samples: int, latent_pixels: int) -> None:
        cost = seconds / (samples * latent_pixels)
        with self._lock:
            old = self._costs.get((model, device))
            self._costs[(model, device)] = cost if old is None else old + self.WEIGHT * (cost - old)

    def per_latent_pixel(self, model: str, device: str) -> float | None:
        return self._costs.get((model, device))


def install(pipe: DiffusionPipeline, model: str, device: str, costs: StepCosts) -> None:
    """Check points in every layer that can take long, sliced attention, and UNet timing for `pipe`
    (model `model`, on `device`)."""
    unet, vae = pipe.unet, pipe.vae
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    _hook(blocks, UNET_LAYERS)
    _hook([*vae.encoder.down_blocks, vae.encoder.mid_block, vae.decoder.mid_block, *vae.decoder.up_blocks],
          VAE_LAYERS)
    for name in ("text_encoder", "text_encoder_2"):
        encoder = getattr(pipe, name, None)
        if encoder is not None:
            _hook([encoder], (CLIPEncoderLayer,))
    for module in (*unet.modules(), *vae.modules()):
        if isinstance(module, Attention):
            module.set_processor(SlicedAttention(module.processor, checkpoint))
    _time_calls(unet, model, device, costs)


def _hook(blocks: list, kinds: tuple[type, ...]) -> None:
    for block in blocks:
        if block is None:
            continue
        block.register_forward_pre_hook(checkpoint)
        for module in block.modules():
            if isinstance(module, kinds):
                module.register_forward_pre_hook(checkpoint)


def _time_calls(unet: torch.nn.Module, model: str, device: str, costs: StepCosts) -> None:
    started = {"at": 0.0}

    def before(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        started["at"] = time.perf_counter()

    def after(module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        seconds = time.perf_counter() - started["at"]
        sample = args[0] if args else kwargs["sample"]
        costs.record(model, device, seconds, sample.shape[0], sample.shape[-2] * sample.shape[-1])

    unet.register_forward_pre_hook(before, with_kwargs=True)
    unet.register_forward_hook(after, with_kwargs=True)
