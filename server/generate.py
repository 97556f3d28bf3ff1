"""The job handler: turns one `generate` request into a `result`, on the worker thread.

Reads like a diffusers pipeline: numbered steps, each explicit.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch

from shared.crop import Rect
from shared.messages import Generate, Progress, Result, ResultImage
from shared.messages import Image as ImagePayload

from . import conditioning, fast_decode, images, inpaint, pipelines, previews, regions, schedulers
from .jobs import Job, JobCancelledError
from .loading import PipelineCache
from .memory import is_out_of_memory, out_of_memory_error
from .outputs import OutputWriter
from .registry import Registry
from .sizing import native_size, round_to_multiple

# Flattening transparent canvas onto white matches Krita's default background.
_BACKGROUND = (255, 255, 255, 255)


@dataclass
class Plan:
    """What a request resolves to before any pixel is computed."""

    gen_width: int
    gen_height: int
    out_width: int
    out_height: int
    strength: float
    seeds: list[int]


class Generator:
    def __init__(self, registry: Registry, cache: PipelineCache, outputs: OutputWriter):
        self.registry = registry
        self.cache = cache
        self.outputs = outputs
        self.conditioner = conditioning.Conditioner(registry)
        self.fast_decoders = fast_decode.FastDecoders(registry.folders, cache.device, cache.dtype)

    def check(self, request: Generate) -> None:
        """Checks that need the server's state, done before a job is queued so errors come at once."""
        entry = self.registry.get(request.model)
        schedulers.check(request.scheduler, request.noise_schedule)
        if request.mode == "inpaint":
            inpaint.check(request)
        self.conditioner.check(request, entry.family)

    def __call__(self, job: Job) -> Result:
        try:
            return self._run(job)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        # Freed here, after the handler: until then the traceback keeps the failed step's tensors alive.
        self.cache.free_memory()
        raise out_of_memory_error(job.request, self.cache.device)

    def _run(self, job: Job) -> Result:
        request = job.request
        started = time.monotonic()

        # 1. Model: loaded on first use, then resident.
        entry = self.registry.get(request.model)
        base = self.cache.get(entry)
        # Inpaint with a regular model is img2img plus a per-step latent blend (inpaint.py).
        pipe = pipelines.for_mode(base, entry.family, "img2img" if request.mode == "inpaint" else request.mode)
        multiple = base.vae_scale_factor

        # 2. Inputs and sizes.
        source = images.to_pil(request.image, "image") if request.image is not None else None
        area = inpaint.prepare(request, source) if request.mode == "inpaint" else None
        if area is not None:
            request, source = area.request, area.context_image
        plan = make_plan(request, source, pipelines.native_side(base), multiple)

        # 3. Scheduler: a fresh one per job, schedulers keep per-run state.
        pipe.scheduler = schedulers.make_scheduler(request.scheduler, base.scheduler.config, request.noise_schedule,
                                                   plan.seeds)

        # 4. Mode-specific inputs.
        inputs: dict[str, Any] = {"width": plan.gen_width, "height": plan.gen_height}
        blend = None
        if area is not None:
            extra, blend = inpaint.diffusion_inputs(area, pipe, plan.gen_width, plan.gen_height, plan.strength,
                                                    plan.seeds)
            inputs.update(extra)
        elif request.mode == "img2img" or pipe.unet.config.in_channels == 9:
            start = flatten(source, plan) if source is not None else gray(plan)
            inputs.update(image=start, strength=plan.strength)
            if pipe.unet.config.in_channels == 9:
                inputs["mask_image"] = PIL.Image.new("L", start.size, 255)

        # 5. Prompts: LoRAs and embeddings on the model, weighted and regional text embeddings (cached).
        corner = (request.image.x, request.image.y) if request.image is not None else (0, 0)
        frame = area.context if area is not None else Rect(*corner, plan.out_width, plan.out_height)
        prompting = self.conditioner.prepare(base, entry, request, frame, (plan.gen_width, plan.gen_height))

        # 6. Denoise, reporting progress and honouring cancel between steps.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in plan.seeds]
        kwargs = pipelines.call_arguments(pipe, {
            **prompting.arguments,
            "num_inference_steps": request.steps,
            "guidance_scale": request.cfg_scale,
            "guidance_rescale": request.guidance_rescale,
            "num_images_per_prompt": len(plan.seeds),
            "generator": generators,
            **inputs,
        })
        step_callback = progress_callback(job, entry.family)
        if blend is not None:
            step_callback = inpaint.chain(blend, step_callback)
        decoder = self.fast_decoders.get(entry.family) if request.fast_decode else None
        with regions.restricted(pipe.unet, prompting.restriction):
            output = pipe(**kwargs, callback_on_step_end=step_callback, output_type="latent" if decoder else "pil")
        pictures = fast_decode.decode(decoder, output.images) if decoder else output.images

        # 7. Back to the requested size; on disk before anything is sent.
        info = describe(request, entry.name, plan) | prompting.info | {"decoder": "taesd" if decoder else "vae"}
        results = []
        x, y = (request.image.x, request.image.y) if request.image is not None else (0, 0)
        if area is not None:
            info.update(area.describe())
            x, y = area.patch.x, area.patch.y
        for picture, seed in zip(pictures, plan.seeds, strict=True):
            if area is not None:
                picture = area.finish(picture)
            elif picture.size != (plan.out_width, plan.out_height):
                picture = picture.resize((plan.out_width, plan.out_height), PIL.Image.Resampling.LANCZOS)
            self.outputs.save(picture, info, seed)
            results.append(ResultImage(image=images.from_pil(picture, request.result_format, x, y), seed=seed))
        return Result(id=request.id, images=results, info=info, elapsed=time.monotonic() - started)


def make_plan(request: Generate, source: PIL.Image.Image | None, native: int, multiple: int) -> Plan:
    if source is not None:
        out_width, out_height = source.size
    else:
        out_width, out_height = request.width or native, request.height or native
    # Inpaint always works at the native area: small selections come out crisp (docs/inpaint.md).
    if request.fit_native or request.mode == "inpaint":
        gen_width, gen_height = native_size(out_width, out_height, native, multiple)
    else:
        gen_width = round_to_multiple(out_width, multiple)
        gen_height = round_to_multiple(out_height, multiple)
        out_width, out_height = gen_width, gen_height
    strength = request.strength if request.strength is not None else (0.75 if request.mode == "img2img" else 1.0)
    first = request.seed if request.seed is not None else secrets.randbelow(2**32)
    seeds = [(first + i) % 2**63 for i in range(request.batch_size)]
    return Plan(gen_width, gen_height, out_width, out_height, strength, seeds)


def flatten(source: PIL.Image.Image, plan: Plan) -> PIL.Image.Image:
    canvas = PIL.Image.new("RGBA", source.size, _BACKGROUND)
    canvas.alpha_composite(source.convert("RGBA"))
    rgb = canvas.convert("RGB")
    if rgb.size != (plan.gen_width, plan.gen_height):
        rgb = rgb.resize((plan.gen_width, plan.gen_height), PIL.Image.Resampling.LANCZOS)
    return rgb


def gray(plan: Plan) -> PIL.Image.Image:
    return PIL.Image.new("RGB", (plan.gen_width, plan.gen_height), (128, 128, 128))


def progress_callback(job: Job, family: str):
    request = job.request

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if job.cancelled:
            raise JobCancelledError
        job.step, job.total = step + 1, pipe.num_timesteps
        preview = None
        if request.preview:
            width, height, data = previews.latents_to_rgba(tensors["latents"], family)
            preview = ImagePayload(width=width, height=height, format="rgba8", data=data)
        job.reply(Progress(id=request.id, step=job.step, total=job.total, preview=preview))
        return tensors

    return on_step_end


def describe(request: Generate, model: str, plan: Plan) -> dict[str, Any]:
    """Every parameter actually used, for the result's `info` and the PNG's metadata."""
    return {
        "mode": request.mode,
        "model": model,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "steps": request.steps,
        "cfg_scale": request.cfg_scale,
        "scheduler": request.scheduler,
        "noise_schedule": request.noise_schedule,
        "sampler": schedulers.label(request.scheduler, request.noise_schedule),
        "width": plan.out_width,
        "height": plan.out_height,
        "generation_width": plan.gen_width,
        "generation_height": plan.gen_height,
        "strength": plan.strength,
        "seeds": plan.seeds,
        "batch_size": len(plan.seeds),
        "guidance_rescale": request.guidance_rescale,
    }
