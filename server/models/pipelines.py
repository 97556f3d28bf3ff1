"""One loaded model, every mode: pipelines for txt2img / img2img / inpaint share the loaded
components through `from_pipe`, so switching modes never reloads weights."""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import diffusers
from diffusers import DiffusionPipeline

from ..errors import Unsupported
from .entry import ModelEntry

# The diffusers pipeline a mode runs on; modes say which they need.
PipelineKind = Literal["txt2img", "img2img", "inpaint"]

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


@dataclass(frozen=True)
class Model:
    """A registry entry with its loaded base pipeline: what a job runs on."""

    entry: ModelEntry
    base: DiffusionPipeline

    @property
    def family(self) -> str:
        return self.entry.family

    @property
    def is_inpaint_model(self) -> bool:
        return self.entry.is_inpaint_model

    @property
    def latent_scale(self) -> int:
        """Pixels per latent pixel, each way (8 for SD1.5 and SDXL)."""
        return self.base.vae_scale_factor

    @property
    def native_side(self) -> int:
        """The side of the square the model was trained at (512 for SD1.5, 1024 for SDXL)."""
        return self.base.unet.config.sample_size * self.base.vae_scale_factor

    def pipeline(self, kind: PipelineKind) -> DiffusionPipeline:
        """The pipeline running `kind` on the base pipeline's components (a 9-channel model runs every
        kind through its inpaint pipeline)."""
        if self.is_inpaint_model:
            return self.base
        cls = _CLASSES[(self.family, kind)]
        if isinstance(self.base, cls):
            return self.base
        cache = _derived.setdefault(self.base, {})
        if kind not in cache:
            pipe = cls.from_pipe(self.base)
            pipe.set_progress_bar_config(disable=True)
            cache[kind] = pipe
        return cache[kind]


def call_arguments(pipe: DiffusionPipeline, wanted: dict[str, Any]) -> dict[str, Any]:
    """`wanted` minus defaults the pipeline does not take; a non-default it cannot honour is an error."""
    accepted = inspect.signature(pipe.__call__).parameters
    kwargs = {}
    for name, value in wanted.items():
        if name in accepted:
            kwargs[name] = value
        elif name == "guidance_rescale" and value:
            raise Unsupported(f"guidance_rescale is not available for {type(pipe).__name__}", "guidance_rescale")
    return kwargs
