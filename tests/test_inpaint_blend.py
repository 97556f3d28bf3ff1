"""The per-step latent blend on real (tiny) diffusers pipelines: the soft mask is a per-pixel denoising
strength, pixels outside it end as the original latents, and the blend's noise is the noise the
pipeline starts from, drawn from the job's generators without using them up."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline

from server.imaging.latents import FullVAE
from server.models import schedulers
from server.models.entry import ModelEntry
from server.models.pipelines import Model, call_arguments
from server.modes import inpaint
from server.modes.base import chain
from shared.messages import Generate, Image, Mask
from testing.tiny_models import tiny_pipeline


@cache
def base(family: str, variant: str) -> DiffusionPipeline:
    pipe = tiny_pipeline(family, variant)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def img2img(family: str, variant: str = "regular", scheduler: str = "dpmpp_2m") -> DiffusionPipeline:
    entry = ModelEntry(name=f"tiny-{family}-{variant}", kind="checkpoint", path=Path("/nowhere"),
                       format="diffusers", family=family, variant=variant)
    pipe = Model(entry, base(family, variant)).pipeline("img2img")
    pipe.scheduler = schedulers.make_scheduler(scheduler, pipe.scheduler.config)
    return pipe


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def nine_channels(pipe: DiffusionPipeline) -> bool:
    return pipe.unet.config.in_channels == 9


def area_of(mask: np.ndarray, strength: float | None = None) -> inpaint.Area:
    """An inpaint of a flat-coloured 128x128 picture with `mask`, worked out as the server does."""
    height, width = mask.shape
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[...] = (40, 120, 200, 255)
    pixels[:, width // 2:, :3] = (220, 200, 30)
    request = Generate(id="t", mode="inpaint", model="m", strength=strength, grow=0, feather=0,
                       image=Image(width=width, height=height, format="rgba8", data=pixels.tobytes()),
                       mask=Mask(width=width, height=height, format="a8", data=mask.tobytes()))
    return inpaint.prepare(request, PIL.Image.fromarray(pixels, "RGBA"))


def run(pipe: DiffusionPipeline, area: inpaint.Area, steps: int, strength: float,
        seeds: list[int]) -> tuple[torch.Tensor, inpaint.LatentBlend]:
    size = area.context.width
    job_generators = generators(seeds)  # made once per job, as the server does
    inputs, blend = inpaint.diffusion_inputs(area, pipe, size, size, strength, job_generators, FullVAE(pipe).encode,
                                            nine_channels(pipe))
    inputs = call_arguments(pipe, {"width": size, "height": size, **inputs})
    output = pipe(prompt="a cat", num_inference_steps=steps, guidance_scale=1.0, output_type="latent",
                  num_images_per_prompt=len(seeds), generator=job_generators, callback_on_step_end=blend, **inputs)
    return output.images, blend


def left_half(size: int = 128) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[:, size // 2:] = 255
    return mask


@pytest.mark.parametrize(("family", "variant"), [("sd15", "regular"), ("sd15", "inpaint"), ("sdxl", "regular"),
                                                 ("sdxl", "inpaint")])
def test_unselected_latents_end_as_the_original(family, variant):
    pipe = img2img(family, variant)
    latents, blend = run(pipe, area_of(left_half()), steps=3, strength=1.0, seeds=[5, 6])
    outside = slice(0, 128 // 8 // 2 - 1)  # latent columns whose coverage is exactly 0
    inside = slice(128 // 8 // 2 + 1, None)
    assert torch.equal(latents[..., outside], blend.original[..., outside])
    assert not torch.allclose(latents[..., inside], blend.original[..., inside], atol=1e-3)
    assert not torch.equal(latents[0], latents[1]), "each seed its own picture"


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m", "ddim", "unipc", "lcm", "heun"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_soft_coverage_is_a_per_pixel_denoising_strength(scheduler, strength):
    """Half coverage: the re-noised original for the first half of the schedule, the model's after."""
    steps = 4
    mask = np.full((64, 64), 128, np.uint8)
    mask[:, :8] = 255  # full coverage somewhere, so the selection's edge grows from there
    pipe = img2img("sd15", scheduler=scheduler)
    job_generators = generators([1])
    inputs, blend = inpaint.diffusion_inputs(area_of(mask, strength), pipe, 64, 64, strength, job_generators,
                                            FullVAE(pipe).encode)
    kinds = []

    def record(pipe, step, timestep, tensors):
        schedule = pipe.scheduler.timesteps
        position = len(schedule) - pipe.num_timesteps + step
        kept = blend.original
        if position + 1 < len(schedule):
            kept = pipe.scheduler.add_noise(blend.original, blend.noise, schedule[position + 1:position + 2])
        probe = (..., slice(4, None), slice(4, None))  # latent pixels of coverage 128/255
        kinds.append("original" if torch.equal(tensors["latents"][probe], kept[probe]) else "model")
        return tensors

    pipe(prompt="x", num_inference_steps=steps, guidance_scale=1.0, output_type="latent",
         generator=job_generators, callback_on_step_end=chain(blend, record),
         **call_arguments(pipe, {"width": 64, "height": 64, **inputs}))
    length = len(pipe.scheduler.timesteps)
    start = length - pipe.num_timesteps
    expected = ["model" if 128 / 255 > (length - p - 0.5) / length else "original" for p in range(start, length)]
    assert kinds == expected
    assert "model" in kinds and (strength < 1 or "original" in kinds)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_blend_noise_is_the_noise_img2img_starts_from(family, strength):
    """The blend's noise is peeked from the job's generators: img2img still draws the same noise first."""
    pipe = img2img(family)
    job_generators = generators([7, 8])
    inputs, blend = inpaint.diffusion_inputs(area_of(left_half(64)), pipe, 64, 64, strength, job_generators,
                                            FullVAE(pipe).encode)
    pipe.scheduler.set_timesteps(4)
    start = round(4 * (1 - strength))  # img2img below full strength starts part way down the schedule
    first = pipe.scheduler.timesteps[start:start + 1]
    started = pipe.prepare_latents(inputs["image"], first, 1, 2, torch.float32, torch.device("cpu"), job_generators)
    assert torch.allclose(started, pipe.scheduler.add_noise(blend.original, blend.noise, first))


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_blend_noise_is_the_noise_a_nine_channel_model_starts_from_at_full_strength(family):
    pipe = img2img(family, "inpaint")
    job_generators = generators([7, 8])
    inputs, blend = inpaint.diffusion_inputs(area_of(left_half(64)), pipe, 64, 64, 1.0, job_generators,
                                            FullVAE(pipe).encode, True)
    pipe.scheduler.set_timesteps(4)
    start = pipe.image_processor.preprocess(inputs["image"])
    _, noise = pipe.prepare_latents(2, 4, 64, 64, torch.float32, torch.device("cpu"), job_generators, image=start,
                                    timestep=pipe.scheduler.timesteps[:1], is_strength_max=True, return_noise=True)
    assert torch.equal(noise, blend.noise)


def test_chain_runs_callbacks_in_order():
    calls = []

    def first(pipe, step, timestep, tensors):
        calls.append("first")
        return {**tensors, "latents": tensors["latents"] + 1}

    def second(pipe, step, timestep, tensors):
        calls.append(("second", tensors["latents"]))
        return tensors

    assert chain(first, None, second)(None, 0, 0, {"latents": 1}) == {"latents": 2}
    assert calls == ["first", ("second", 2)]
