"""Selection-bounded inpaint and outpaint: a context region and a selection in, one RGBA patch out.

The job handler (generate.py) calls, in order:
  check(request)                       pixel-free checks, before the job is queued
  prepare(request, source)             the selection, its edge, the context, the result's alpha
  diffusion_inputs(area, pipe, ...)    the start picture at generation size and the latent blend
  area.finish(picture)                 a generated picture as the patch, in canvas coordinates
The numbers and their reasons are in docs/inpaint.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.utils.torch_utils import randn_tensor

from shared import errors
from shared.crop import Edge, Rect, context_rect, edge_defaults
from shared.errors import ProtocolError, bad_request
from shared.messages import Generate

from . import images, masks

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]

# An empty prompt for `remove` asks for what is around the object, not for anything new.
REMOVE_PROMPT = "background"
# Generated pixels at least this close to the result need not match the original: the VAE decoder
# spreads each latent pixel over about two latent pixels (16 generated pixels) around it.
DECODER_REACH = 16
# The colour drift (in 8-bit levels) worth correcting; below it the correction is noise.
COLOUR_TOLERANCE = 1.0
# Generation-size alpha at or above this is "fully selected" for the fills that replace content.
REPLACE_LEVEL = 0.99


def check(request: Generate) -> None:
    """What can be refused without decoding pixels (the message's own check ran already)."""
    image, mask = Rect(*request.image.bounds), Rect(*request.mask.bounds)
    if not image.contains(mask):
        raise bad_request(
            "mask",
            f"the mask ({mask.width}x{mask.height} at {mask.x}, {mask.y}) is not inside the image "
            f"({image.width}x{image.height} at {image.x}, {image.y})",
        )
    data = request.mask.data
    if request.mask.format == "a8" and request.fill != "replace_background" and data.count(0) == len(data):
        raise ProtocolError(errors.EMPTY_SELECTION, "the mask selects no pixel", "mask")


@dataclass
class Area:
    """An inpaint worked out at canvas scale. Rects are in canvas coordinates."""

    request: Generate  # with the prompt its fill mode implies
    fill: str  # the fill mode, `auto` resolved
    edge: Edge
    selection: Rect  # bounds of the selected pixels
    context: Rect  # the region diffused
    patch: Rect  # bounds of the grown selection: all the result covers
    original: np.ndarray  # the context's pixels, RGBA
    alpha: np.ndarray  # the result's alpha over the context: the grown, feathered selection

    @property
    def context_image(self) -> PIL.Image.Image:
        return PIL.Image.fromarray(self.original, "RGBA")

    def replaces_content(self, strength: float) -> bool:
        """Whether the start hides what is selected: always to remove it, at full strength to fill.
        Below full strength the selection is refined, so its content must stay."""
        return self.fill == "remove" or (self.fill in ("fill", "replace_background") and strength >= 1.0)

    def finish(self, picture: PIL.Image.Image) -> PIL.Image.Image:
        """A generated picture (generation size) as the RGBA patch over `self.patch`."""
        # 1. Back to canvas scale.
        size = (self.context.width, self.context.height)
        generated = masks.resize(np.asarray(picture.convert("RGB")), size).astype(np.float32)
        # 2. Colours: the model's drift, measured where it was told to keep the picture.
        offset = self._colour_offset(generated, picture.width)
        if np.abs(offset).max() >= COLOUR_TOLERANCE:
            generated += offset
        # 3. Only the grown selection, its alpha the feathered selection.
        box = self.patch.relative_to(self.context)
        rgb = np.clip(np.rint(generated[box.y:box.bottom, box.x:box.right]), 0, 255).astype(np.uint8)
        alpha = self.alpha[box.y:box.bottom, box.x:box.right]
        return PIL.Image.fromarray(np.dstack([rgb, alpha]), "RGBA")

    def _colour_offset(self, generated: np.ndarray, generated_width: int) -> np.ndarray:
        margin = DECODER_REACH * self.context.width / generated_width
        width = max(16, self.edge.reach)
        region = self.patch.grown(int(margin + width) + 1).intersect(self.context).relative_to(self.context)
        rows, cols = slice(region.y, region.bottom), slice(region.x, region.right)
        original = self.original[rows, cols]
        where = masks.ring(self.alpha[rows, cols], margin, width) & (original[..., 3] == 255)
        return masks.colour_offset(generated[rows, cols], original, where)

    def describe(self) -> dict[str, Any]:
        return {
            "fill": self.fill,
            "grow": self.edge.grow,
            "feather": self.edge.feather,
            "selection": _box(self.selection),
            "context": _box(self.context),
            "patch": _box(self.patch),
        }


def prepare(request: Generate, source: PIL.Image.Image) -> Area:
    """Everything about an inpaint that is decided at canvas scale."""
    image_rect = Rect(*request.image.bounds)

    # 1. Coverage over the whole image (the mask may be a sub-rectangle), inverted for replace_background.
    coverage = np.zeros((image_rect.height, image_rect.width), np.uint8)
    placed = Rect(*request.mask.bounds).relative_to(image_rect)
    coverage[placed.y:placed.bottom, placed.x:placed.right] = np.asarray(images.to_pil(request.mask, "mask"))
    if request.fill == "replace_background":
        coverage = 255 - coverage

    # 2. The selection: where coverage is not zero.
    found = masks.bounds(coverage)
    if found is None:
        raise ProtocolError(errors.EMPTY_SELECTION, "the mask selects no pixel", "mask")
    selection = Rect(found[0] + image_rect.x, found[1] + image_rect.y, found[2], found[3])

    # 3. Edge: the request's grow and feather, or defaults proportional to the selection.
    defaults = edge_defaults(selection)
    edge = Edge(defaults.grow if request.grow is None else request.grow,
                defaults.feather if request.feather is None else request.feather)

    # 4. Context: the shared crop rule, re-applied to what was sent (a client may send more).
    context = context_rect(selection, image_rect, edge, request.fill)
    box = context.relative_to(image_rect)
    original = np.array(source.convert("RGBA"))[box.y:box.bottom, box.x:box.right]
    coverage = coverage[box.y:box.bottom, box.x:box.right]

    # 5. The result's alpha, computed only where it can be non-zero, and the patch it spans.
    alpha = np.zeros_like(coverage)
    near = selection.grown(edge.reach).intersect(context).relative_to(context)
    alpha[near.y:near.bottom, near.x:near.right] = masks.edge_alpha(
        coverage[near.y:near.bottom, near.x:near.right], edge.grow, edge.feather)
    x, y, width, height = masks.bounds(alpha)
    patch = Rect(x + context.x, y + context.y, width, height)

    # 6. Fill mode and the prompt it implies.
    fill = request.fill
    if fill == "auto":
        fill = "expand" if np.any((original[..., 3] == 0) & (alpha > 0)) else "fill"
    if fill == "remove" and not request.prompt.strip():
        request = dataclasses.replace(request, prompt=REMOVE_PROMPT)
    return Area(request, fill, edge, selection, context, patch, original, alpha)


def diffusion_inputs(area: Area, pipe: Any, width: int, height: int, strength: float,
                     seeds: list[int]) -> tuple[dict[str, Any], StepCallback]:
    """Pipeline inputs for `area` at width x height, and the step callback that blends the latents.

    A regular model runs img2img from the start picture's latents; a 9-channel inpaint model gets
    the start picture and the mask as it was trained to.
    """
    # 1. Start picture at generation size: transparent canvas infilled, and the selection too
    #    where the fill mode replaces what is there.
    size = (width, height)
    alpha = masks.resize_mask(area.alpha, size)
    replace = alpha >= REPLACE_LEVEL if area.replaces_content(strength) else np.zeros(alpha.shape, bool)
    start = PIL.Image.fromarray(masks.start_picture(masks.resize_rgba(area.original, size), replace))

    # 2. Its latents, the coverage per latent pixel and a fixed noise: the same noise img2img
    #    starts from, since both are the first draw from generators seeded alike.
    original = encode(pipe, start)
    scale = pipe.vae_scale_factor
    coverage = masks.resize_mask(area.alpha, (width // scale, height // scale))
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    shape = (len(seeds), *original.shape[1:])
    noise = randn_tensor(shape, generator=generators, device=original.device, dtype=original.dtype)
    blend = LatentBlend(original.expand(shape), torch.from_numpy(coverage).to(original.device), noise)

    # 3. Model inputs (img2img pipelines take the size from the latents and ignore width, height).
    inputs: dict[str, Any] = {"width": width, "height": height, "strength": strength}
    if pipe.unet.config.in_channels == 9:
        mask_image = PIL.Image.fromarray(np.rint(alpha * 255).astype(np.uint8), "L")
        return {**inputs, "image": start, "mask_image": mask_image}, blend
    return {**inputs, "image": original.expand(shape).clone()}, blend


def encode(pipe: Any, picture: PIL.Image.Image) -> torch.Tensor:
    """The scaled latents of `picture` (the distribution's mode: no sampling noise), as the UNet takes them."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(picture)
    dtype = vae.dtype
    # SDXL's VAE overflows in float16; its config asks for float32 (as diffusers' pipelines do).
    upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    try:
        if upcast:
            vae.to(torch.float32)
        with torch.no_grad():
            latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    finally:
        if upcast:
            vae.to(dtype)
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean, device=latents.device).view(1, -1, 1, 1)
        std = torch.tensor(std, device=latents.device).view(1, -1, 1, 1)
        latents = (latents - mean) * config.scaling_factor / std
    else:
        latents = latents * config.scaling_factor
    return latents.to(pipe.unet.dtype)


class LatentBlend:
    """A `callback_on_step_end` that keeps the picture outside the selection.

    After every step, each latent pixel keeps the model's latents if its coverage is above the
    step's threshold (masks.step_threshold) and otherwise becomes the original re-noised to the
    next step's noise level, with one fixed noise. The soft mask so acts as a per-pixel
    denoising strength instead of being cut at 50% as diffusers' inpaint pipelines do.
    """

    def __init__(self, original: torch.Tensor, coverage: torch.Tensor, noise: torch.Tensor):
        self.original = original
        self.coverage = coverage[None, None]
        self.noise = noise

    def __call__(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        latents = tensors["latents"]
        scheduler = pipe.scheduler
        schedule = scheduler.timesteps
        # img2img runs the last `num_timesteps` of the schedule: strength < 1 starts part way.
        position = len(schedule) - pipe.num_timesteps + step
        if position + 1 < len(schedule):
            kept = scheduler.add_noise(self.original, self.noise, schedule[position + 1:position + 2])
        else:
            kept = self.original
        model = self.coverage > masks.step_threshold(position, len(schedule))
        tensors["latents"] = torch.where(model.to(latents.device), latents, kept.to(latents.dtype))
        return tensors


def chain(*callbacks: StepCallback) -> StepCallback:
    """One `callback_on_step_end` running `callbacks` in order, each seeing the last one's tensors."""

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        for callback in callbacks:
            tensors = callback(pipe, step, timestep, tensors)
        return tensors

    return on_step_end


def _box(rect: Rect) -> list[int]:
    return [rect.x, rect.y, rect.width, rect.height]
