"""inpaint: a selection repainted within its context; the result is one RGBA patch over the grown,
feathered selection, in canvas coordinates. Also outpainting (transparent canvas in the context).

The job handler asks the mode, in order:
  Inpaint.check(request)     pixel-free checks, before the job is queued
  Inpaint(request, model)    at canvas scale (`prepare`): the selection, its edge, the context, the
                             result's alpha and the fill mode (shared/fills.py)
  inputs(pipe, generators, encode)
                             the start picture at generation size, its latents and the latent blend
  on_step_end                the blend, after every step
  finish(picture)            a generated picture as the patch
The numbers and their reasons are in docs/inpaint.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from shared import fills
from shared.crop import Edge, Rect, context_rect, edge_defaults
from shared.fills import Fill
from shared.messages import Generate

from ..errors import BadInput, EmptySelection
from ..imaging import masks, payloads
from ..models.pipelines import Model
from ..models.upscalers import Upscalers
from .base import Encode, Frame, Mode

# Generated pixels at least this close to the result need not match the original: the VAE decoder
# spreads each latent pixel over about two latent pixels (16 generated pixels) around it.
DECODER_REACH = 16
# The colour drift (in 8-bit levels) worth correcting; below it the correction is noise.
COLOUR_TOLERANCE = 1.0
# Generation-size alpha at or above this is "fully selected" for the fills that replace content.
REPLACE_LEVEL = 0.99


class Inpaint(Mode):
    name = "inpaint"
    # A regular model inpaints by img2img plus the latent blend; a 9-channel one by its own pipeline.
    pipeline = "img2img"

    @staticmethod
    def check(request: Generate) -> None:
        image, mask = Rect(*request.image.bounds), Rect(*request.mask.bounds)
        if not image.contains(mask):
            raise BadInput(f"the mask ({mask.width}x{mask.height} at {mask.x}, {mask.y}) is not inside the image "
                           f"({image.width}x{image.height} at {image.x}, {image.y})", "mask")
        data = request.mask.data
        if request.mask.format == "a8" and not fills.FILLS[request.fill].inverted and data.count(0) == len(data):
            raise EmptySelection("the mask selects no pixel", "mask")

    def __init__(self, request: Generate, model: Model, upscalers: Upscalers | None = None):
        super().__init__(request, model, upscalers)
        self.area = prepare(request, payloads.to_pil(request.image, "image"))
        self.request = self.area.request
        context = self.area.context
        # Always at the native area: small selections come out crisp (docs/inpaint.md).
        self.frame = Frame.fit(self.request, model, (context.x, context.y), (context.width, context.height),
                               native=True)

    def inputs(self, pipe: DiffusionPipeline, generators: Sequence[torch.Generator], encode: Encode) -> dict[str, Any]:
        inputs, self.on_step_end = diffusion_inputs(self.area, pipe, self.frame.width, self.frame.height,
                                                    self.strength, generators, encode, self.model.is_inpaint_model)
        return inputs

    @property
    def origin(self) -> tuple[int, int]:
        return self.area.patch.x, self.area.patch.y

    def finish(self, picture: PIL.Image.Image) -> PIL.Image.Image:
        return self.area.finish(picture)

    def describe(self) -> dict[str, Any]:
        return self.area.describe()


@dataclass
class Area:
    """An inpaint worked out at canvas scale. Rects are in canvas coordinates."""

    request: Generate  # with the prompt its fill mode implies
    fill: Fill  # `auto` resolved
    edge: Edge
    selection: Rect  # bounds of the selected pixels
    context: Rect  # the region diffused
    patch: Rect  # bounds of the grown selection: all the result covers
    original: np.ndarray  # the context's pixels, RGBA
    alpha: np.ndarray  # the result's alpha over the context: the grown, feathered selection

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
            "fill": self.fill.name,
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
    coverage[placed.y:placed.bottom, placed.x:placed.right] = np.asarray(payloads.to_pil(request.mask, "mask"))
    if fills.FILLS[request.fill].inverted:
        coverage = 255 - coverage

    # 2. The selection: where coverage is not zero.
    found = masks.bounds(coverage)
    if found is None:
        raise EmptySelection("the mask selects no pixel", "mask")
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
    fill = fills.resolve(request.fill, reaches_transparent=bool(np.any((original[..., 3] == 0) & (alpha > 0))))
    request = dataclasses.replace(request, prompt=fill.prompt(request.prompt))
    return Area(request, fill, edge, selection, context, patch, original, alpha)


def diffusion_inputs(area: Area, pipe: DiffusionPipeline, width: int, height: int, strength: float,
                     generators: Sequence[torch.Generator], encode: Encode,
                     inpaint_model: bool = False) -> tuple[dict[str, Any], LatentBlend]:
    """Pipeline inputs for `area` at width x height, and the step callback that blends the latents.

    A regular model runs img2img from the start picture's latents; a 9-channel inpaint model gets
    the start picture and the mask as it was trained to.
    """
    # 1. Start picture at generation size: transparent canvas infilled, and the selection too
    #    where the fill mode replaces what is there.
    size = (width, height)
    alpha = masks.resize_mask(area.alpha, size)
    replace = alpha >= REPLACE_LEVEL if area.fill.replaces_content(strength) else np.zeros(alpha.shape, bool)
    start = PIL.Image.fromarray(masks.start_picture(masks.resize_rgba(area.original, size), replace))

    # 2. Its latents, the coverage per latent pixel, and the noise the pipeline will start from.
    original = encode(start)
    scale = pipe.vae_scale_factor
    coverage = masks.resize_mask(area.alpha, (width // scale, height // scale))
    shape = (len(generators), *original.shape[1:])
    noise = upcoming_noise(generators, shape, original.device, original.dtype)
    blend = LatentBlend(original.expand(shape), torch.from_numpy(coverage).to(original.device), noise)

    # 3. Model inputs (img2img pipelines take the size from the latents).
    if inpaint_model:
        mask_image = PIL.Image.fromarray(np.rint(alpha * 255).astype(np.uint8), "L")
        return {"image": start, "mask_image": mask_image, "strength": strength}, blend
    return {"image": original.expand(shape).clone(), "strength": strength}, blend


def upcoming_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    """The noise the job's pipeline will start from, drawn from copies of `generators` so that they are
    left as they are for the pipeline.

    diffusers' img2img pipelines draw their start noise first from the job's generators: the start
    picture comes as latents, so nothing is sampled to encode it (test_inpaint_blend checks this).
    So do the inpaint pipelines of 9-channel models at full strength; below it they sample the
    start picture's latents first, and the blend's noise, though of the right level, is not their
    start noise.
    """
    copies = [torch.Generator(g.device).set_state(g.get_state()) for g in generators]
    return randn_tensor(shape, generator=copies, device=device, dtype=dtype)


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


def _box(rect: Rect) -> list[int]:
    return [rect.x, rect.y, rect.width, rect.height]
