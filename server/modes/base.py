"""What a mode is: the part of a job that differs between txt2img, img2img and inpaint.

The job handler (server/generate.py) makes one mode object per job, `MODES[request.mode](request,
model)`, and asks it in order:

  frame                      where the picture lies on the canvas and the size it is generated at
  request_area               where it lies in the request's coordinates (control images are there)
  request                    the request as the mode reads it (a fill mode may imply a prompt)
  pipeline                   the diffusers pipeline a regular model runs it with (a 9-channel
                             model runs every mode through its inpaint pipeline)
  inputs(pipe, generators, encode)
                             the pipeline arguments of its own: the start picture's latents (by
                             `encode`: the job's autoencoder, imaging/latents.py), mask, strength
  on_step_end                a callback run after every denoising step, before progress is sent
  denoise(pipe, arguments, progress)
                             the pipeline call: one, unless a mode needs several (passes, tiles),
                             which it reports to `progress` (full_size.Progress)
  finish(picture), origin    a generated picture as the result layer, and where it goes
  describe()                 what it adds to the result's `info`

Making the mode object decodes the request's pixels (on the worker thread); `check(request)` runs
before the job is queued and needs no pixels. A new mode is a module here with a `Mode` subclass,
listed in modes/__init__.py; the handler does not change.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import PIL.Image
import torch
from diffusers import DiffusionPipeline

from shared.crop import Rect
from shared.messages import Generate

from ..imaging import payloads
from ..imaging.sizing import native_size, round_to_multiple
from ..models.pipelines import Model, PipelineKind
from ..models.upscalers import LANCZOS, Upscalers
from . import full_size
from .full_size import Progress

# diffusers' `callback_on_step_end`: (pipe, step, timestep, tensors) -> tensors.
StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]
# A picture at generation size -> its latents, batch of one.
Encode = Callable[[PIL.Image.Image], torch.Tensor]

# Where a 9-channel model has no start picture, it starts from mid grey.
GREY = (128, 128, 128)
# Full detail refines the enlarged native picture at this strength: enough to draw the detail the
# enlargement lacks, too little to move the composition (docs/upscale.md).
FULL_DETAIL_STRENGTH = 0.4


@dataclass(frozen=True)
class Frame:
    """Where a job's picture lies on the canvas and the size it is generated at."""

    canvas: Rect  # canvas coordinates, canvas scale
    width: int  # generation size: multiples of the model's latent scale
    height: int

    @classmethod
    def fit(cls, request: Generate, model: Model, corner: tuple[int, int], size: tuple[int, int] | None,
            native: bool = False) -> Frame:
        """A picture of `size` at `corner` (or the request's size, else the model's native square).
        Generated at the model's native area with its aspect ratio when the request asks (`fit_native`)
        or the mode does (`native`); otherwise at the size rounded to the latent scale, which is then
        also the picture's size on the canvas."""
        multiple, side = model.latent_scale, model.native_side
        width, height = size if size is not None else (request.width or side, request.height or side)
        if native or request.fit_native:
            return cls(Rect(*corner, width, height), *native_size(width, height, side, multiple))
        width, height = round_to_multiple(width, multiple), round_to_multiple(height, multiple)
        return cls(Rect(*corner, width, height), width, height)

    def latent_size(self, scale: int) -> tuple[int, int]:
        return self.width // scale, self.height // scale


class Mode(ABC):
    name: ClassVar[str]
    pipeline: ClassVar[PipelineKind]
    default_strength: ClassVar[float] = 1.0
    on_step_end: StepCallback | None = None
    frame: Frame

    @staticmethod
    def check(request: Generate) -> None:
        """What this mode refuses without decoding pixels (the message's own checks ran already)."""
        return None

    def __init__(self, request: Generate, model: Model, upscalers: Upscalers | None = None):
        self.request = request
        self.model = model
        self.upscalers = upscalers
        self.strength = request.strength if request.strength is not None else self.default_strength

    def inputs(self, pipe: DiffusionPipeline, generators: Sequence[torch.Generator], encode: Encode) -> dict[str, Any]:
        return {}

    def denoise(self, pipe: DiffusionPipeline, arguments: dict[str, Any], progress: Progress) -> Any:
        return pipe(**arguments)

    @property
    def request_area(self) -> Rect:
        """Where the picture lies in the request's canvas coordinates, where control images are given
        (a mode that scales the canvas differs from its frame)."""
        return self.frame.canvas

    def enlarge(self, pictures: Sequence[PIL.Image.Image], size: tuple[int, int], upscaler: str | None,
                progress: Progress) -> tuple[list[PIL.Image.Image], str]:
        """`pictures` at `size` (RGB) through the named upscaler, else the server's first, else Lanczos;
        and the name of what enlarged them."""
        entry = self.upscalers.choose(upscaler) if self.upscalers is not None else None
        progress.stage(0)
        if entry is None:
            return [p.convert("RGB").resize(size, PIL.Image.Resampling.LANCZOS) for p in pictures], LANCZOS
        return [self.upscalers.upscale(p, size, entry, progress.tile) for p in pictures], entry.name

    @property
    @abstractmethod
    def origin(self) -> tuple[int, int]:
        """The result layer's top-left corner on the canvas."""

    @abstractmethod
    def finish(self, picture: PIL.Image.Image) -> PIL.Image.Image:
        """A generated picture as the result layer."""

    def describe(self) -> dict[str, Any]:
        return {}


class WholePicture(Mode):
    """A mode whose result is the whole generated picture: from the request's size, or over its image."""

    def __init__(self, request: Generate, model: Model, upscalers: Upscalers | None = None):
        super().__init__(request, model, upscalers)
        image = request.image
        self.source = payloads.to_pil(image, "image") if image is not None else None
        corner = (image.x, image.y) if image is not None else (0, 0)
        self.frame = Frame.fit(request, model, corner, self.source.size if self.source is not None else None)
        canvas = self.frame.canvas
        # Generated smaller than the canvas: fast detail enlarges the picture, full detail refines it
        # again at the canvas's size (docs/upscale.md).
        self.enlarges = request.fit_native and canvas.width * canvas.height > self.frame.width * self.frame.height
        self.full_detail = self.enlarges and request.detail == "full"
        self.enlarged_by: str | None = None

    def denoise(self, pipe: DiffusionPipeline, arguments: dict[str, Any], progress: Progress) -> Any:
        """The native picture; with full detail, enlarged to the canvas's size and refined there."""
        if not self.full_detail:
            return pipe(**arguments)
        native = pipe(**{**arguments, "output_type": "pil"}).images
        multiple = self.model.latent_scale
        size = (round_to_multiple(self.frame.canvas.width, multiple), round_to_multiple(self.frame.canvas.height,
                                                                                       multiple))
        enlarged, self.enlarged_by = self.enlarge(native, size, None, progress)
        # Decoded there: the refine keeps the native picture's coarse content in pixels.
        return full_size.refine(self.model, pipe, {**arguments, "output_type": "pil"}, enlarged,
                                FULL_DETAIL_STRENGTH, progress, (self.frame.width, self.frame.height))

    def describe(self) -> dict[str, Any]:
        if not self.full_detail:
            return {"detail": "fast"} if self.enlarges else {}
        return {"detail": "full", "upscaler": self.enlarged_by, "refine_strength": FULL_DETAIL_STRENGTH}

    @property
    def origin(self) -> tuple[int, int]:
        return self.frame.canvas.x, self.frame.canvas.y

    def finish(self, picture: PIL.Image.Image) -> PIL.Image.Image:
        """The picture at the frame's canvas size."""
        size = (self.frame.canvas.width, self.frame.canvas.height)
        return picture if picture.size == size else picture.resize(size, PIL.Image.Resampling.LANCZOS)

    def start_picture(self) -> PIL.Image.Image:
        """The image flattened at generation size, or flat grey without one."""
        size = (self.frame.width, self.frame.height)
        if self.source is None:
            return PIL.Image.new("RGB", size, GREY)
        rgb = self.flattened()
        return rgb if rgb.size == size else rgb.resize(size, PIL.Image.Resampling.LANCZOS)

    def flattened(self) -> PIL.Image.Image:
        """The image over the canvas's white background, at its own size."""
        return payloads.flattened(self.source)

    def refine(self, start: PIL.Image.Image, encode: Encode, count: int) -> dict[str, Any]:
        """Inputs that refine `start` at the mode's strength: its latents, one copy per image. A 9-channel
        model's pipeline takes the picture itself (it also encodes it masked) and is told to repaint
        all of it."""
        if self.model.is_inpaint_model:
            return {"image": start, "strength": self.strength, "mask_image": PIL.Image.new("L", start.size, 255)}
        latents = encode(start)
        return {"image": latents.expand(count, *latents.shape[1:]).clone(), "strength": self.strength}


def seeds(request: Generate) -> list[int]:
    """One seed per image: the request's (or a random one) and the next ones."""
    first = request.seed if request.seed is not None else secrets.randbelow(2**32)
    return [(first + i) % 2**63 for i in range(request.batch_size)]


def chain(*callbacks: StepCallback | None) -> StepCallback:
    """One `callback_on_step_end` running `callbacks` in order (None skipped), each seeing the last one's
    tensors."""
    present = [callback for callback in callbacks if callback is not None]

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        for callback in present:
            tensors = callback(pipe, step, timestep, tensors)
        return tensors

    return on_step_end
