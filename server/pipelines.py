"""One loaded model, every mode: pipelines for txt2img / img2img / inpaint share the loaded
components through `from_pipe`, so switching modes never reloads weights."""

from __future__ import annotations

import inspect
import weakref
from typing import Any

import diffusers
from diffusers import DiffusionPipeline

from shared import errors
from shared.errors import ProtocolError

_CLASSES = {
    ("sd15", "txt2img"): diffusers.StableDiffusionPipeline,
    ("sd15", "img2img"): diffusers.StableDiffusionImg2ImgPipeline,
    ("sd15", "inpaint"): diffusers.StableDiffusionInpaintPipeline,
    ("sdxl", "txt2img"): diffusers.StableDiffusionXLPipeline,
    ("sdxl", "img2img"): diffusers.StableDiffusionXLImg2ImgPipeline,
    ("sdxl", "inpaint"): diffusers.StableDiffusionXLInpaintPipeline,
}

# Pipelines derived from a base pipeline die with it when the model cache lets it go.
_derived: weakref.WeakKeyDictionary[DiffusionPipeline, dict[str, DiffusionPipeline]] = (
    weakref.WeakKeyDictionary()
)


def for_mode(base: DiffusionPipeline, family: str, mode: str) -> DiffusionPipeline:
    """The pipeline running `mode` on `base`'s components (a 9-channel model runs every mode
    through its inpaint pipeline)."""
    if _is_inpaint_model(base):
        return base
    cls = _CLASSES[(family, mode)]
    if isinstance(base, cls):
        return base
    cache = _derived.setdefault(base, {})
    if mode not in cache:
        pipe = cls.from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        cache[mode] = pipe
    return cache[mode]


def _is_inpaint_model(pipe: DiffusionPipeline) -> bool:
    return pipe.unet.config.in_channels == 9


def native_side(pipe: DiffusionPipeline) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def call_arguments(pipe: DiffusionPipeline, wanted: dict[str, Any]) -> dict[str, Any]:
    """`wanted` minus defaults the pipeline does not take; a non-default it cannot honour is an error."""
    accepted = inspect.signature(pipe.__call__).parameters
    kwargs = {}
    for name, value in wanted.items():
        if name in accepted:
            kwargs[name] = value
        elif name == "guidance_rescale" and value:
            raise ProtocolError(errors.UNSUPPORTED,
                                f"guidance_rescale is not available for {type(pipe).__name__}",
                                "guidance_rescale")
    return kwargs
