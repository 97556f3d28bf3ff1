"""Protocol v1 messages as dataclasses (the contract is docs/protocol.md).

Client -> server: hello, models, generate, cancel, live, live_stop, finalize, preprocess; train (training.py).
Server -> client: welcome, models, queued, progress, result, cancelled, error, live_stopped.
Each class's `TYPE` is the `type` field of its frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from . import PROTOCOL_VERSION
from .errors import TOO_LARGE, ProtocolError, bad_request
from .png import SIGNATURE as PNG_SIGNATURE
from .schema import spec

Mode = Literal["txt2img", "img2img", "inpaint", "upscale"]
FillMode = Literal["auto", "fill", "expand", "add", "remove", "replace_background"]
PromptSyntax = Literal["a1111", "novelai", "compel"]
NoiseSchedule = Literal["default", "karras", "exponential"]
ResultFormat = Literal["rgba8", "png"]
Autoencoder = Literal["auto", "full", "tiny"]
# fast: a canvas larger than the model's native area gets the native picture scaled up; full: that
# picture refined again at the canvas's size, in tiles (docs/upscale.md).
Detail = Literal["fast", "full"]
UPSCALE_FACTORS = (2, 4)
# What a control image shows, and so which ControlNet reads it (docs/control.md).
ControlKind = Literal["scribble", "lineart", "softedge", "canny", "depth", "pose", "tile"]
CONTROL_KINDS: tuple[str, ...] = ControlKind.__args__  # type: ignore[attr-defined]
# What of a reference picture the result takes (docs/reference.md): all of it, its style, its
# composition, or the face it shows.
ReferenceMode = Literal["reference", "style", "composition", "face"]
REFERENCE_MODES: tuple[str, ...] = ReferenceMode.__args__  # type: ignore[attr-defined]
# The control images a server makes from a picture (`preprocess`).
PreprocessKind = Literal["canny", "softedge", "scribble", "lineart", "depth", "pose"]

ID_LENGTH = 128
NAME_LENGTH = 256
MAX_SEED = 2**63 - 1
MAX_REGIONS = 16
# ControlNets in one request: each runs beside the UNet at every step it covers.
MAX_CONTROLS = 4
# Reference pictures in one request: each adds image tokens to every cross-attention.
MAX_REFERENCES = 4
# Characters in one prompt: A1111 users write a few hundred; servers may read less in some syntaxes.
PROMPT_LENGTH = 20_000
# Canvas positions lie within +-2^24 px: far beyond any canvas, and a difference of two positions
# still fits the 32-bit integers of the imaging libraries.
MAX_COORDINATE = 2**24
# Models a server lists: well beyond a large A1111 or ComfyUI library of checkpoints and LoRAs.
MAX_MODELS = 4096
# Room in a result message for what is not pixels (info, framing).
RESULT_MARGIN = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What a server accepts; sent in `welcome` so clients can check before sending.

    `max_side` and `max_pixels` bound every image sent and every size generated; an `upscale`
    result may be larger, up to `max_upscaled_side` and `max_upscaled_pixels` (its image, like any
    other, within `max_side`). A result must fit in one message: a large one is asked for as png.
    """

    max_side: int = 4096
    max_pixels: int = 16 * 1024 * 1024
    max_batch: int = 8
    max_message: int = 256 * 1024 * 1024
    max_regions: int = MAX_REGIONS
    max_upscaled_side: int = 8192
    max_upscaled_pixels: int = 64 * 1024 * 1024


@dataclass
class ModelDefaults:
    """The settings a model is meant to be used with, as its server recommends them (from a sidecar
    file, the model's own metadata, else its family); None where it recommends nothing. A client
    uses them for every setting its user has not chosen. Fields a client does not know are skipped,
    so a newer server may recommend more."""

    cfg_scale: float | None = spec(None, min=0.0, max=30.0)
    steps: int | None = spec(None, min=1, max=150)
    scheduler: str | None = spec(None, max_len=64)
    width: int | None = spec(None, min=64, max=8192)
    height: int | None = spec(None, min=64, max=8192)


@dataclass
class ModelInfo:
    """A model as clients see it (no paths). `kind`, `family` and `variant` are strings, not fixed
    choices, so a client keeps working when a newer server lists kinds it does not know yet."""

    name: str
    kind: str  # checkpoint, lora, embedding, upscaler, controlnet
    format: str | None = None  # diffusers, single_file
    family: str | None = None  # sd15, sdxl; None when it could not be told
    variant: str | None = None  # regular, inpaint (checkpoints)
    refused: str | None = None  # why it cannot be used
    embedded: bool = False  # the built-in demo model
    trigger_words: list[str] = field(default_factory=list)
    defaults: ModelDefaults | None = None  # checkpoints that can be used
    scale: int | None = None  # upscalers: how many times larger each side comes out
    kinds: list[str] = field(default_factory=list)  # ControlNets: the control kinds it reads

    @property
    def usable_checkpoint(self) -> bool:
        return self.kind == "checkpoint" and not self.refused


# --- payloads -------------------------------------------------------------------------------


@dataclass
class Image:
    """Pixels at canvas position (x, y). rgba8 is straight (not premultiplied) RGBA, row-major."""

    width: int = spec(min=1)
    height: int = spec(min=1)
    format: Literal["rgba8", "png"] = spec()
    data: bytes = spec()
    x: int = spec(0, min=-MAX_COORDINATE, max=MAX_COORDINATE)
    y: int = spec(0, min=-MAX_COORDINATE, max=MAX_COORDINATE)

    CHANNELS: ClassVar[int] = 4
    RAW: ClassVar[str] = "rgba8"

    def check(self, limits: Limits, where: str) -> None:
        if self.width > limits.max_side or self.height > limits.max_side:
            raise ProtocolError(
                TOO_LARGE,
                f"{where} is {self.width}x{self.height}, the largest side allowed is {limits.max_side}",
                f"{where}.width" if self.width > limits.max_side else f"{where}.height",
            )
        if self.width * self.height > limits.max_pixels:
            raise ProtocolError(
                TOO_LARGE,
                f"{where} has {self.width * self.height} pixels, at most {limits.max_pixels} allowed",
                where,
            )
        if self.format == self.RAW:
            expected = self.width * self.height * self.CHANNELS
            if len(self.data) != expected:
                raise bad_request(
                    f"{where}.data",
                    f"{where}.data has {len(self.data)} bytes; {self.width}x{self.height} {self.format} "
                    f"needs {expected}",
                )
        elif not self.data.startswith(PNG_SIGNATURE):
            raise bad_request(f"{where}.data", f"{where}.data is not a PNG file")

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) in canvas coordinates."""
        return self.x, self.y, self.width, self.height


@dataclass
class Mask(Image):
    """8-bit coverage (0 = outside, 255 = inside; values between are soft edges)."""

    format: Literal["a8", "png"] = spec()

    CHANNELS: ClassVar[int] = 1
    RAW: ClassVar[str] = "a8"


@dataclass
class Region:
    """A prompt that applies only where its mask covers the picture."""

    mask: Mask = spec()
    prompt: str = spec(max_len=PROMPT_LENGTH)
    negative_prompt: str = spec("", max_len=PROMPT_LENGTH)


@dataclass
class Control:
    """A control image (a sketch, line art, a depth map...) that the picture follows, read by a ControlNet
    of its `kind` (the one named by `model`, else the server's for the model's family). `strength`
    scales what the ControlNet adds; it acts over the share [start, end] of the steps and is not run
    outside it."""

    kind: ControlKind = spec()
    image: Image = spec()
    strength: float = spec(1.0, min=0.0, max=2.0)
    start: float = spec(0.0, min=0.0, max=1.0)
    end: float = spec(1.0, min=0.0, max=1.0)
    model: str | None = spec(None, max_len=NAME_LENGTH)


@dataclass
class Reference:
    """A picture the result takes after, read by an IP-Adapter (the one named by `model`, else the
    server's for the model's family and the `mode`): all of it, only its style or its composition (the
    adapter then acts only in the attention blocks that carry them), or the face it shows. `strength`
    scales the adapter; it acts over the share [start, end] of the steps, and with a `mask` (canvas
    coordinates) only where the mask covers the picture."""

    image: Image = spec()
    mode: ReferenceMode = spec("reference")
    strength: float = spec(0.6, min=0.0, max=1.0)
    start: float = spec(0.0, min=0.0, max=1.0)
    end: float = spec(1.0, min=0.0, max=1.0)
    mask: Mask | None = spec(None)
    model: str | None = spec(None, max_len=NAME_LENGTH)


@dataclass
class ResultImage:
    image: Image
    seed: int


# --- client -> server ----------------------------------------------------------------------


@dataclass
class Hello:
    TYPE: ClassVar[str] = "hello"
    protocol: int = spec()
    client: str = spec(max_len=NAME_LENGTH)
    token: str | None = spec(None, max_len=1024)


@dataclass
class ListModels:
    TYPE: ClassVar[str] = "models"


@dataclass
class Generate:
    TYPE: ClassVar[str] = "generate"
    id: str = spec(max_len=ID_LENGTH)
    mode: Mode = spec()
    model: str = spec(max_len=NAME_LENGTH)
    prompt: str = spec("", max_len=PROMPT_LENGTH)
    negative_prompt: str = spec("", max_len=PROMPT_LENGTH)
    width: int | None = spec(None, min=8)
    height: int | None = spec(None, min=8)
    image: Image | None = spec(None)
    mask: Mask | None = spec(None)
    strength: float | None = spec(None, min=0.0, max=1.0)
    steps: int = spec(20, min=1, max=150)
    cfg_scale: float = spec(7.0, min=0.0, max=30.0)
    scheduler: str = spec("dpmpp_2m", max_len=64)
    noise_schedule: NoiseSchedule = spec("default")
    seed: int | None = spec(None, min=0, max=MAX_SEED)
    batch_size: int = spec(1, min=1, max=64)
    guidance_rescale: float = spec(0.0, min=0.0, max=1.0)
    preview: bool = spec(False)
    # Generate at the model's native area with the requested aspect ratio, then scale the
    # result to width x height: a canvas far from 512^2 / 1024^2 still gets a coherent picture.
    fit_native: bool = spec(False)
    result_format: ResultFormat = spec("rgba8")
    regions: list[Region] = spec(default_factory=list, max_len=MAX_REGIONS)
    control: list[Control] = spec(default_factory=list, max_len=MAX_CONTROLS)
    reference: list[Reference] = spec(default_factory=list, max_len=MAX_REFERENCES)
    # Inpaint only (docs/inpaint.md): pixels to grow the selection by and to feather over.
    grow: int | None = spec(None, min=0, max=1024)
    feather: int | None = spec(None, min=0, max=1024)
    fill: FillMode = spec("auto")
    prompt_syntax: PromptSyntax = spec("a1111")
    # What turns the start picture into latents and the result back into pixels: the model's full VAE,
    # or a tiny autoencoder (TAESD) where the server has one for the model, several times faster with a
    # little less detail. `auto`: tiny for live frames, full otherwise (docs/live.md).
    autoencoder: Autoencoder = spec("auto")
    # With fit_native, on a canvas larger than the model's native area (docs/upscale.md).
    detail: Detail = spec("fast")
    # Upscale only: how many times larger each side gets (2 or 4), and with which upscaler model
    # (kind `upscaler` in `models`); without one, the server's first, else Lanczos resampling. With
    # a `strength`, the upscaled picture is then refined with the prompt at that strength, in tiles.
    scale: int = spec(2, min=2, max=4)
    upscaler: str | None = spec(None, max_len=NAME_LENGTH)

    def check(self, limits: Limits) -> None:
        """Checks that involve more than one field (single fields are checked by the schema)."""
        if self.batch_size > limits.max_batch:
            raise ProtocolError(
                TOO_LARGE, f"batch_size is {self.batch_size}, at most {limits.max_batch} allowed", "batch_size"
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value > limits.max_side:
                raise ProtocolError(TOO_LARGE, f"{name} is {value}, at most {limits.max_side}", name)
        if self.width is not None and self.height is not None and self.width * self.height > limits.max_pixels:
            raise ProtocolError(TOO_LARGE, f"width x height exceeds {limits.max_pixels} pixels", "width")
        if self.image is not None:
            self.image.check(limits, "image")
        if self.mask is not None:
            self.mask.check(limits, "mask")
        for i, region in enumerate(self.regions):
            region.mask.check(limits, f"regions[{i}].mask")
        for i, control in enumerate(self.control):
            control.image.check(limits, f"control[{i}].image")
            _check_range(f"control[{i}]", control.start, control.end)
        for i, reference in enumerate(self.reference):
            reference.image.check(limits, f"reference[{i}].image")
            if reference.mask is not None:
                reference.mask.check(limits, f"reference[{i}].mask")
            _check_range(f"reference[{i}]", reference.start, reference.end)
        if self.mode != "txt2img" and self.strength is not None and int(self.steps * self.strength) < 1:
            raise bad_request("strength", f"strength {self.strength} of {self.steps} steps runs no step; "
                                          "raise strength or steps")
        if self.mode in ("img2img", "inpaint") and self.image is None:
            raise bad_request("image", f"mode {self.mode!r} needs an image")
        if self.mode == "inpaint" and self.mask is None:
            raise bad_request("mask", "mode 'inpaint' needs a mask")
        if self.mode == "upscale":
            self._check_upscale(limits)

    def _check_upscale(self, limits: Limits) -> None:
        if self.image is None:
            raise bad_request("image", "mode 'upscale' needs an image")
        if self.scale not in UPSCALE_FACTORS:
            raise bad_request("scale", f"scale must be one of {', '.join(map(str, UPSCALE_FACTORS))}, got {self.scale}")
        width, height = self.image.width * self.scale, self.image.height * self.scale
        if max(width, height) > limits.max_upscaled_side:
            raise ProtocolError(TOO_LARGE, f"image x {self.scale} is {width}x{height}; an upscale result may be "
                                           f"at most {limits.max_upscaled_side} a side", "scale")
        if width * height > limits.max_upscaled_pixels:
            raise ProtocolError(TOO_LARGE, f"image x {self.scale} has {width * height} pixels; an upscale result "
                                           f"may have at most {limits.max_upscaled_pixels}", "scale")
        if self.result_format == "rgba8" and width * height * Image.CHANNELS > limits.max_message - RESULT_MARGIN:
            raise bad_request("result_format", f"a {width}x{height} result does not fit in one message as rgba8; "
                                               "ask for png")


def _check_range(where: str, start: float, end: float) -> None:
    if start >= end:
        raise bad_request(f"{where}.end", f"{where} ends at {end}, not after its start {start}")


@dataclass
class Cancel:
    TYPE: ClassVar[str] = "cancel"
    id: str = spec(max_len=ID_LENGTH)


@dataclass
class Live(Generate):
    """A frame of a live session: like `generate`, but a newer frame supersedes an older one."""

    TYPE: ClassVar[str] = "live"
    session: str = spec("", max_len=ID_LENGTH, required=True)


@dataclass
class LiveStop:
    TYPE: ClassVar[str] = "live_stop"
    session: str = spec(max_len=ID_LENGTH)


@dataclass
class Preprocess:
    """A control image of `kind` made from `image` (docs/control.md): answered by a `result` with the one
    image, at the image's canvas position."""

    TYPE: ClassVar[str] = "preprocess"
    id: str = spec(max_len=ID_LENGTH)
    kind: PreprocessKind = spec()
    image: Image = spec()
    result_format: ResultFormat = spec("rgba8")

    def check(self, limits: Limits) -> None:
        self.image.check(limits, "image")


@dataclass
class Finalize:
    """The live frame `id` at full quality: the latents the server kept of it decoded by the full VAE,
    without denoising again. Answered by a `result` with the same id; the server keeps the latest
    result of each live session."""

    TYPE: ClassVar[str] = "finalize"
    id: str = spec(max_len=ID_LENGTH)


# --- server -> client ----------------------------------------------------------------------


@dataclass
class Welcome:
    TYPE: ClassVar[str] = "welcome"
    server: str
    device: str
    models: list[ModelInfo] = spec(max_len=MAX_MODELS)
    schedulers: list[str] = spec()
    limits: Limits = spec(default_factory=Limits)
    protocol: int = PROTOCOL_VERSION
    # Extension: display names for `schedulers`, as artists know them ("DPM++ 2M Karras").
    scheduler_labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelList:
    TYPE: ClassVar[str] = "models"
    models: list[ModelInfo] = spec(max_len=MAX_MODELS)


@dataclass
class Queued:
    TYPE: ClassVar[str] = "queued"
    id: str
    position: int
    # Seconds the job's denoising should take once it starts, from what the model took on this server
    # so far; absent before the model has run. A guide, not a promise.
    estimate_s: float | None = None


@dataclass
class Progress:
    TYPE: ClassVar[str] = "progress"
    id: str
    step: int
    total: int
    preview: Image | None = None
    # Of a training job (shared/training.py): the loss of its latest optimizer step.
    loss: float | None = None
    # Of a step done in tiles (docs/upscale.md): the tile about to run (0-based) and how many a step has.
    tile: int | None = None
    tiles: int | None = None


@dataclass
class Result:
    TYPE: ClassVar[str] = "result"
    id: str
    images: list[ResultImage]
    info: dict[str, Any]
    elapsed: float
    # Of a training job: the new LoRA or embedding as `models` names it, and its file's name.
    name: str | None = None
    file: str | None = None


@dataclass
class Cancelled:
    TYPE: ClassVar[str] = "cancelled"
    id: str
    reason: str | None = None


@dataclass
class Error:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    id: str | None = None
    field: str | None = None


@dataclass
class LiveStopped:
    TYPE: ClassVar[str] = "live_stopped"
    session: str

