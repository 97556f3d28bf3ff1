"""The job handler: turns one `generate` request into a `result`, on the worker thread; and a
`finalize` of a live frame into the same frame decoded at full quality.

Reads like a diffusers pipeline: numbered steps, each explicit. What differs between txt2img,
img2img, inpaint and upscale is the mode object's (server/modes/); this path is the same for all of
them. Pictures become latents and latents pictures here, not in the pipeline (imaging/latents.py):
by the full VAE, or by a tiny autoencoder for live frames, whose latents are kept for `finalize`
(sessions.py). A mode that makes its pictures itself (an upscale, a full-detail refine) hands
them back decoded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import PIL.Image
import torch

from shared.messages import Generate, Preprocess, Progress, Result, ResultImage
from shared.messages import Image as ImagePayload

from .conditioning import control, regions
from .conditioning.conditioner import Conditioner
from .errors import Unsupported
from .imaging import latents, payloads, previews
from .imaging.latents import Coder, FullVAE, TinyCoder
from .imaging.outputs import OutputWriter
from .imaging.preprocess import PREPROCESSORS
from .jobs.job import Job, JobCancelledError
from .models import interrupts, schedulers
from .models.annotators.kept import Annotators
from .models.controlnets import ControlNets
from .models.loading import PipelineCache
from .models.memory import is_out_of_memory, out_of_memory_error
from .models.pipelines import Model, call_arguments
from .models.registry import Registry
from .models.tiny_autoencoders import TinyAutoencoders
from .models.upscalers import Upscalers
from .modes import MODES
from .modes.base import Frame, Mode, chain, seeds
from .sessions import Encoder, LiveFrame, LiveSessions

# The side of the square each family was trained at: a request without a size is generated there.
NATIVE_SIDES = {"sd15": 512, "sdxl": 1024}
# What one ControlNet costs at a step, as a share of the UNet's: 0.28 measured for SD1.5 (bench/control.py).
CONTROL_COST = 0.3


class Generator:
    """`outputs` None: the results are written by whoever receives them (a cluster's front end)."""

    def __init__(self, registry: Registry, cache: PipelineCache, outputs: OutputWriter | None):
        self.registry = registry
        self.cache = cache
        self.outputs = outputs
        self.conditioner = Conditioner(registry)
        self.tiny_autoencoders = TinyAutoencoders(registry, cache.device, cache.dtype)
        self.upscalers = Upscalers(registry, cache.device, cache.dtype)
        self.controlnets = ControlNets(registry, cache.device, cache.dtype)
        self.annotators = Annotators(registry.folders, cache.device, cache.dtype)
        self.sessions = LiveSessions()

    def check(self, request: Generate) -> None:
        """Checks that need the server's state, done before a job is queued so errors come at once."""
        entry = self.registry.get(request.model)
        schedulers.check(request.scheduler, request.noise_schedule)
        MODES[request.mode].check(request)
        if request.upscaler is not None:
            self.upscalers.choose(request.upscaler)
        self.conditioner.check(request, entry.family)
        for i, item in enumerate(request.control):
            self.controlnets.choose(item.kind, entry, item.model, f"control[{i}]")
        if request.reference:
            raise Unsupported("this server has no IP-Adapter support yet for reference pictures", "reference")

    def check_finalize(self, owner: int, frame_id: str) -> LiveFrame:
        """The kept live frame a `finalize` asks for; NotFound at once when there is none."""
        return self.sessions.frame(owner, frame_id)

    def estimate(self, request: Generate) -> float | None:
        """Seconds the request's denoising should take: its UNet calls times what this model's UNet took
        per latent pixel on this device so far (None before it has run). Attention grows faster than
        the area, so sizes far above those seen are estimated low."""
        entry = self.registry.get(request.model)
        cost = self.cache.step_costs.per_latent_pixel(entry.name, str(self.cache.device))
        if cost is None:
            return None
        side = NATIVE_SIDES.get(entry.family or "", 512)
        if request.fit_native:
            width = height = side
        elif request.image is not None and request.width is None:
            width, height = request.image.width, request.image.height
        else:
            width, height = request.width or side, request.height or side
        mode = MODES[request.mode]
        strength = request.strength if request.strength is not None else mode.default_strength
        steps = max(1, int(request.steps * strength))
        # Classifier-free guidance runs the UNet on the prompt and the negative prompt at once.
        samples = request.batch_size * (2 if request.cfg_scale > 1 else 1)
        # Each ControlNet adds a share of a UNet call at the steps of its range (bench/control.py).
        controls = sum(c.end - c.start for c in request.control if c.strength > 0)
        return round(cost * (width // 8) * (height // 8) * samples * steps * (1 + CONTROL_COST * controls), 2)

    def __call__(self, job: Job) -> Result:
        try:
            with interrupts.checking(job.raise_if_cancelled):
                return self._finalize(job) if job.finalize else self._run(job)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        # Freed here, after the handler: until then the traceback keeps the failed step's tensors alive.
        self.controlnets.unload()
        self.cache.free_memory()
        raise out_of_memory_error(job.request, self.cache.device)

    def _run(self, job: Job) -> Result:
        started = time.monotonic()

        # 1. Model: loaded on first use, then resident.
        entry = self.registry.get(job.request.model)
        model = Model(entry, self.cache.get(entry))

        # 2. Mode: reads the request's pixels at canvas scale; says where its picture lies on the
        #    canvas and at what size it is generated.
        mode = MODES[job.request.mode](job.request, model, self.upscalers)
        request, frame = mode.request, mode.frame

        # 3. Seeds: one generator per image, made once; the mode and the pipeline draw from them.
        seed_list = seeds(request)
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seed_list]

        # 4. Pipeline, and a fresh scheduler: schedulers keep per-run state.
        pipe = model.pipeline(mode.pipeline)
        pipe.scheduler = schedulers.make_scheduler(request.scheduler, model.base.scheduler.config,
                                                   request.noise_schedule, seed_list)

        # 5. Prompts: LoRAs and embeddings on the model, weighted and regional text embeddings
        #    (cached); each region's mask over the mode's frame.
        latent_size = frame.latent_size(model.latent_scale)
        region_masks = None
        if request.regions:
            region_masks = regions.latent_masks(request.regions, frame.canvas, latent_size)
        prompting = self.conditioner.prepare(model.base, entry, request, region_masks)
        global_tokens = prompting.restriction.spans[0][0] if prompting.restriction else None

        # 6. Controls: each control image cut to the frame like the picture, its ControlNet loaded.
        controls = control.prepare(request.control, mode.request_area, (frame.width, frame.height), latent_size,
                                   entry, self.controlnets)

        # 7. Autoencoder: a tiny one for live frames where the model has one (docs/live.md). A live
        #    session's start picture is encoded once while it stays the same, and where a stroke
        #    changed a part of it, that part alone where the coder allows (sessions.py).
        live = job.session is not None
        coder = self.coder(model, pipe, request, live)
        encode = (self.sessions.encoder((job.owner, job.session), f"{entry.name}\0{entry.path}\0{coder.label}",
                                        coder) if live else coder.encode)

        # 8. The mode's own inputs: start latents, mask, strength.
        inputs = mode.inputs(pipe, generators, encode)

        # 9. Denoise to latents, reporting progress and honouring cancel between steps (and tiles,
        #    where the mode works in tiles); a large picture's VAE works in tiles too.
        arguments = call_arguments(pipe, {
            **prompting.arguments,
            "num_inference_steps": request.steps,
            "guidance_scale": request.cfg_scale,
            "guidance_rescale": request.guidance_rescale,
            "num_images_per_prompt": len(seed_list),
            "generator": generators,
            "width": frame.width,
            "height": frame.height,
            **inputs,
        })
        progress = JobProgress(job, model.family)
        arguments["callback_on_step_end"] = chain(mode.on_step_end, progress.on_step_end,
                                                  controls.on_step_end if controls else None)
        arguments["output_type"] = "latent"
        with (regions.restricted(pipe.unet, prompting.restriction), control.applied(pipe, controls, global_tokens),
              latents.tiled_vae(pipe.vae, frame.width, frame.height)):
            output = mode.denoise(pipe, arguments, progress)

        # 10. Decode, unless the mode made its pictures itself (by the full VAE, in tiles where large).
        made = not isinstance(output.images, torch.Tensor)
        pictures = output.images if made else coder.decode(output.images)

        # 11. The result layers, on disk before anything is sent; a live frame's latents are kept for
        #     `finalize`.
        info = (describe(request, entry.name, frame, mode.strength, seed_list) | prompting.info
                | coder_info(coder, model, request, encode) | ({"decoder": FullVAE.name} if made else {})
                | mode.describe() | (controls.info() if controls else {}))
        if live and not job.cancelled and not made:
            self.sessions.keep_frame((job.owner, job.session),
                                     LiveFrame(request, entry, mode, output.images, seed_list, info))
        return Result(id=request.id, images=self._layers(mode, pictures, seed_list, info), info=info,
                      elapsed=time.monotonic() - started)

    def _finalize(self, job: Job) -> Result:
        """A kept live frame decoded by the full VAE: the layer Apply gives, from the same latents."""
        started = time.monotonic()
        kept = self.sessions.frame(job.owner, job.id)
        model = Model(kept.entry, self.cache.get(kept.entry))
        pictures = FullVAE(model.base, sdxl=model.family == "sdxl").decode(kept.latents)
        info = kept.info | {"decoder": FullVAE.name, "finalized": True}
        return Result(id=kept.id, images=self._layers(kept.mode, pictures, kept.seeds, info), info=info,
                      elapsed=time.monotonic() - started)

    def preprocess(self, request: Preprocess) -> Result:
        """A control image made from the request's picture (imaging/preprocess.py; a depth map or a pose by
        a model, models/annotators/), on disk before it is sent. It is made on the reading thread that
        asked, not queued: a fraction of a second, but for a pose on a CPU (seconds, docs/control.md)."""
        started = time.monotonic()
        rgb = np.asarray(payloads.flattened(payloads.to_pil(request.image, "image")))
        annotated: dict[str, Any] = {}
        if request.kind == "depth":
            made, annotated = self.annotators.depth(rgb)
        elif request.kind == "pose":
            made, annotated = self.annotators.pose(rgb)
        else:
            made = PREPROCESSORS[request.kind](rgb)
        picture = PIL.Image.fromarray(made)
        info = {"preprocess": request.kind, "width": picture.width, "height": picture.height} | annotated
        if self.outputs is not None:
            self.outputs.save(picture, info, 0)
        image = payloads.from_pil(picture, request.result_format, request.image.x, request.image.y)
        return Result(id=request.id, images=[ResultImage(image=image, seed=0)], info=info,
                      elapsed=time.monotonic() - started)

    def coder(self, model: Model, pipe: Any, request: Generate, live: bool) -> Coder:
        """The request's autoencoder: `auto` is the tiny one for live frames; the full VAE where there is
        no tiny one for the model."""
        if request.autoencoder == "tiny" or (request.autoencoder == "auto" and live):
            tiny = self.tiny_autoencoders.get(model.entry)
            if tiny is not None:
                return TinyCoder(pipe, tiny)
        return FullVAE(pipe, sdxl=model.family == "sdxl")

    def _layers(self, mode: Mode, pictures: list[Any], seed_list: list[int], info: dict[str, Any]) -> list[ResultImage]:
        """The mode's layers of `pictures`, each written to disk before it is sent."""
        x, y = mode.origin
        results = []
        for picture, seed in zip(pictures, seed_list, strict=True):
            layer = mode.finish(picture)
            if self.outputs is not None:
                self.outputs.save(layer, info, seed)
            results.append(ResultImage(image=payloads.from_pil(layer, mode.request.result_format, x, y), seed=seed))
        return results


class LocalWorker:
    """This machine's device as the queue's worker (server/jobs/worker.py): jobs run in this process."""

    name = "local"

    def __init__(self, generator: Generator, trainer: Callable[[Job], Any] | None = None):
        self.generator = generator
        self.trainer = trainer  # runs `train` jobs (server/training/runner.py)

    @property
    def device(self) -> str:
        cache = self.generator.cache
        return f"{cache.device} ({str(cache.dtype).removeprefix('torch.')})"

    def loaded(self) -> Collection[str]:
        return self.generator.cache.loaded()

    def has(self, model: str) -> bool:
        return True

    def run(self, job: Job) -> Any:
        if job.background and self.trainer is not None:
            return self.trainer(job)
        return self.generator(job)

    def recover(self, stopping: threading.Event) -> bool:
        return True  # never lost: it is this process


class JobProgress:
    """What a running job tells its client, and where cancel lands: after every step, and before every
    tile of a step done in tiles (the mode's `progress`)."""

    def __init__(self, job: Job, family: str):
        self.job = job
        self.family = family

    def on_step_end(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        job = self.job
        if job.cancelled:
            raise JobCancelledError
        job.step, job.total = step + 1, pipe.num_timesteps
        preview = None
        if job.request.preview:
            width, height, data = previews.latents_to_rgba(tensors["latents"], self.family)
            preview = ImagePayload(width=width, height=height, format="rgba8", data=data)
        job.reply(Progress(id=job.id, step=job.step, total=job.total, preview=preview))
        return tensors

    def stage(self, steps: int) -> None:
        self.job.step, self.job.total = 0, steps

    def tile(self, index: int, count: int) -> None:
        job = self.job
        if job.cancelled:
            raise JobCancelledError
        job.reply(Progress(id=job.id, step=job.step, total=job.total, tile=index, tiles=count))


def coder_info(coder: Coder, model: Model, request: Generate, encode: Any) -> dict[str, Any]:
    """Which autoencoder ran: `decoder`, `encoder` where there was a start picture (a 9-channel model's
    pipeline encodes it with its VAE), the tiny autoencoder's name, and for a live session's start
    picture how it was encoded: `start_encode` ("reused" unchanged, "tiles" where only a changed part
    was, "whole"), `latents_reused` (true where it was not encoded at all) and `tile_error` (what the
    check at a patch's border measured, where one was tried)."""
    info: dict[str, Any] = {"decoder": coder.name}
    if isinstance(coder, TinyCoder):
        info["tiny_autoencoder"] = coder.tiny.name
    if request.image is not None:
        info["encoder"] = FullVAE.name if model.is_inpaint_model else coder.name
    if isinstance(encode, Encoder) and encode.way is not None:
        info["start_encode"] = encode.way
        info["latents_reused"] = encode.reused
        if encode.ring_error is not None:
            info["tile_error"] = round(encode.ring_error, 6)
    return info


def describe(request: Generate, model: str, frame: Frame, strength: float, seed_list: list[int]) -> dict[str, Any]:
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
        "width": frame.canvas.width,
        "height": frame.canvas.height,
        "generation_width": frame.width,
        "generation_height": frame.height,
        "strength": strength,
        "seeds": seed_list,
        "batch_size": len(seed_list),
        "guidance_rescale": request.guidance_rescale,
    }
