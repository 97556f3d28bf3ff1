"""From what the artist has on the canvas and in the docker to one `generate` request (or a
`preprocess` one, which makes a control image from the canvas).

Krita-free: the canvas is read through the `Canvas` interface (plugin/document.py for Krita,
a fake in the tests). Only the region the crop rule names is ever read, never more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from shared import fills
from shared.crop import Rect, context_rect, edge_defaults
from shared.messages import (
    RESULT_MARGIN,
    Control,
    Detail,
    FillMode,
    Generate,
    Image,
    Limits,
    Live,
    Mask,
    Preprocess,
    Reference,
    Region,
)

from .controls import KINDS, PREPROCESS_KINDS, ControlLayer
from .errors import BAD_CONTROL, NO_MODEL, SELECTION_OUTSIDE, UserError
from .references import SIDE, ReferenceLayer
from .regions import RegionPrompt


class Canvas(Protocol):
    """The part of a document a request is built from."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the canvas in pixels."""

    def selection_bounds(self) -> Rect | None:
        """Bounding box of the selection in canvas coordinates, None without a selection."""

    def read_pixels(self, rect: Rect) -> bytes:
        """The merged visible image inside `rect`, straight RGBA8, without the preview layer."""

    def read_selection(self, rect: Rect) -> bytes:
        """The selection's 8-bit coverage inside `rect` (0 outside the selection)."""

    def read_layer_alpha(self, layer_id: str, rect: Rect) -> bytes | None:
        """The 8-bit alpha of a layer or group inside `rect`; None when the layer no longer exists."""

    def read_layer_rgba(self, layer_id: str, rect: Rect) -> bytes | None:
        """A layer's or group's own pixels inside `rect`, straight RGBA8 whatever its visibility; None
        when the layer no longer exists."""

    def read_layer_picture(self, layer_id: str, side: int) -> Image | None:
        """A layer's or group's own pixels over its own bounds (not the canvas's), straight rgba8
        whatever its visibility, shrunk to at most `side` pixels a side (references.sent_size); None
        when the layer no longer exists or holds no pixels."""


# The docker's fill picker: every fill mode of the protocol (docs/inpaint.md) as a label and a
# tooltip, `auto` first because it is the default and right for most inpaints.
FILL_MODES: dict[FillMode, tuple[str, str]] = {
    "auto": ("Auto", "Expand where the selection reaches transparent canvas, otherwise fill"),
    "fill": ("Fill with new content",
             "Paint something new that fits the surroundings, not a copy of what was there "
             "(below 100% strength the content is refined instead)"),
    "expand": ("Expand (outpaint)", "Keep the painting and continue it into transparent canvas"),
    "add": ("Add to what is there", "Start from the selected content and paint onto it"),
    "remove": ("Remove", "Paint the selected thing away, filling in from its surroundings; "
                         "an empty prompt paints background"),
    "replace_background": ("Replace background",
                           "Keep the selection and repaint everything else (sends the whole canvas, "
                           "which may be at most 4096 px a side)"),
}
DEFAULT_FILL: FillMode = fills.DEFAULT
# The docker's detail picker (docs/upscale.md): what a canvas larger than the model's native area gets.
DETAILS: dict[Detail, tuple[str, str]] = {
    "fast": ("Fast", "Generate at the model's size and enlarge the picture to the canvas"),
    "full": ("Full resolution", "Then refine the enlarged picture at the canvas's size, tile by tile: "
                                "sharp detail on large canvases, several times slower"),
}
DEFAULT_DETAIL: Detail = "fast"


def fill_mode(value: str | None) -> FillMode:
    """A stored fill mode, or the default for one this plugin does not know (left by another version)."""
    return value if value in fills.FILLS else DEFAULT_FILL


def detail(value: str | None) -> Detail:
    """A stored detail choice, or the default for one this plugin does not know."""
    return value if value in DETAILS else DEFAULT_DETAIL


@dataclass
class Settings:
    """What the docker's controls say."""

    model: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    # 1.0 generates (or inpaints) from scratch; below, the existing pixels are refined.
    strength: float = 1.0
    batch_size: int = 1
    seed: int | None = None  # None: a new random seed each time
    steps: int = 20
    cfg_scale: float = 7.0
    scheduler: str = "dpmpp_2m"
    fill: FillMode = DEFAULT_FILL  # how a selection is inpainted; unused without one
    detail: Detail = DEFAULT_DETAIL  # a canvas larger than the model's native area: enlarged or refined


def canvas_rect(canvas: Canvas) -> Rect:
    width, height = canvas.size
    return Rect(0, 0, width, height)


def _selection(canvas: Canvas) -> Rect | None:
    """The selection's bounds on the canvas; UserError when it lies wholly outside."""
    selection = canvas.selection_bounds()
    if selection is None:
        return None
    inside = selection.intersect(canvas_rect(canvas))
    if inside.is_empty:
        raise UserError(SELECTION_OUTSIDE)
    return inside


def source_rect(canvas: Canvas, fill: FillMode) -> Rect:
    """The part of the canvas a request reads: the selection's context region, else the whole canvas."""
    selection = _selection(canvas)
    if selection is None:
        return canvas_rect(canvas)
    return context_rect(selection, canvas_rect(canvas), edge_defaults(selection), fill)


def build_request(canvas: Canvas, settings: Settings, job_id: str, live_session: str | None = None,
                  regions: Iterable[RegionPrompt] = (), controls: Iterable[ControlLayer] = (),
                  references: Iterable[ReferenceLayer] = ()) -> Generate:
    """txt2img / img2img of the whole canvas, or an inpaint of the selection's context region
    (of the whole canvas for a fill mode that repaints around the selection).

    Each region prompt goes along with its layer's alpha over the same part of the canvas as the
    image; a region that does not reach into that part, or whose layer is gone, is left out. So does
    each control layer's image, placed where it was read (docs/control.md): a control with nothing
    painted in that part, or whose layer is gone, is left out. Each reference picture goes along
    whole, however much of the canvas is read (_references).

    With `live_session` it is a `live` frame: one image, always from the canvas (img2img, never
    txt2img), with the session's seed unless the artist fixed one; the server codes it with its tiny
    autoencoder where it has one (docs/live.md).
    """
    if not settings.model:
        raise UserError(NO_MODEL)
    bounds = canvas_rect(canvas)
    selection = _selection(canvas)
    kind, extra = (Generate, {}) if live_session is None else (Live, {"session": live_session})
    common = dict(
        id=job_id, model=settings.model, prompt=settings.prompt, negative_prompt=settings.negative_prompt,
        steps=settings.steps, cfg_scale=settings.cfg_scale, scheduler=settings.scheduler, seed=settings.seed,
        batch_size=1 if live_session else settings.batch_size, preview=live_session is None,
        reference=_references(canvas, references), **extra,
    )
    if selection is not None:
        edge = edge_defaults(selection)
        region = context_rect(selection, bounds, edge, settings.fill)
        common["regions"] = _regions(canvas, regions, region)
        common["control"] = _controls(canvas, controls, region)
        return kind(
            mode="inpaint", strength=settings.strength, image=_image(canvas, region),
            mask=Mask(width=region.width, height=region.height, format="a8", x=region.x, y=region.y,
                      data=canvas.read_selection(region)),
            grow=edge.grow, feather=edge.feather, fill=settings.fill, **common,
        )
    common["regions"] = _regions(canvas, regions, bounds)
    common["control"] = _controls(canvas, controls, bounds)
    # Live frames come fast: their canvas is always enlarged, never refined at full size.
    common["detail"] = DEFAULT_DETAIL if live_session else settings.detail
    if settings.strength >= 1.0 and live_session is None:
        return kind(mode="txt2img", width=bounds.width, height=bounds.height, fit_native=True, **common)
    return kind(mode="img2img", strength=settings.strength, image=_image(canvas, bounds), fit_native=True,
                **common)


@dataclass
class Upscaling:
    """What the docker's upscale controls say."""

    scale: int = 2
    upscaler: str | None = None  # None: the server's first upscaler, else Lanczos
    refine: float = 0.0  # the strength to refine the upscaled canvas at with the prompt; 0: not refined


def build_upscale(canvas: Canvas, settings: Settings, upscaling: Upscaling, job_id: str,
                  limits: Limits, controls: Iterable[ControlLayer] = (),
                  references: Iterable[ReferenceLayer] = ()) -> Generate:
    """An upscale of the whole canvas as it looks (docs/upscale.md): the result comes back as large as
    the canvas will be once scaled, as png where raw pixels would not fit in one message. A refined
    upscale carries the control layers, which steer the refine (a tile control above all), and the
    reference pictures."""
    if not settings.model:
        raise UserError(NO_MODEL)
    bounds = canvas_rect(canvas)
    raw = bounds.width * bounds.height * upscaling.scale**2 * Image.CHANNELS
    return Generate(
        id=job_id, mode="upscale", model=settings.model, prompt=settings.prompt,
        negative_prompt=settings.negative_prompt, steps=settings.steps, cfg_scale=settings.cfg_scale,
        scheduler=settings.scheduler, seed=settings.seed, image=_image(canvas, bounds), scale=upscaling.scale,
        upscaler=upscaling.upscaler, strength=upscaling.refine or None,
        control=_controls(canvas, controls, bounds) if upscaling.refine else [],
        reference=_references(canvas, references) if upscaling.refine else [],
        result_format="rgba8" if raw <= limits.max_message - RESULT_MARGIN else "png",
    )


def build_preprocess(canvas: Canvas, kind: str, fill: FillMode, job_id: str) -> Preprocess:
    """A control image of `kind` made by the server from the canvas as a generate with `fill` reads it:
    the selection's context region, else the whole canvas (docs/control.md, "Preprocess"). The answer
    lies where that part of the canvas lies."""
    if kind not in PREPROCESS_KINDS:
        made = ", ".join(KINDS[k][0] for k in PREPROCESS_KINDS)
        raise UserError(BAD_CONTROL, f"the server makes no {kind!r} control from the canvas, only {made}")
    return Preprocess(id=job_id, kind=kind, image=_image(canvas, source_rect(canvas, fill)))


def _image(canvas: Canvas, rect: Rect) -> Image:
    return Image(width=rect.width, height=rect.height, format="rgba8", x=rect.x, y=rect.y,
                 data=canvas.read_pixels(rect))


def _regions(canvas: Canvas, regions: Iterable[RegionPrompt], rect: Rect) -> list[Region]:
    found = []
    for region in regions:
        alpha = canvas.read_layer_alpha(region.layer_id, rect)
        if alpha is None or not alpha.strip(b"\0"):
            continue
        mask = Mask(width=rect.width, height=rect.height, format="a8", x=rect.x, y=rect.y, data=alpha)
        found.append(Region(mask=mask, prompt=region.prompt, negative_prompt=region.negative_prompt))
    return found


def _controls(canvas: Canvas, controls: Iterable[ControlLayer], rect: Rect) -> list[Control]:
    found = []
    for control in controls:
        rgba = canvas.read_layer_rgba(control.layer_id, rect)
        if rgba is None or not rgba[3::4].strip(b"\0"):
            continue
        image = Image(width=rect.width, height=rect.height, format="rgba8", x=rect.x, y=rect.y, data=rgba)
        found.append(Control(kind=control.kind, image=image, strength=control.strength, start=control.start,
                             end=control.end))
    return found


def _references(canvas: Canvas, references: Iterable[ReferenceLayer]) -> list[Reference]:
    """Each reference layer's whole picture, shrunk to at most SIDE a side; a layer that is gone or
    holds nothing visible is left out."""
    found = []
    for reference in references:
        image = canvas.read_layer_picture(reference.layer_id, SIDE)
        if image is None or not image.data[3::4].strip(b"\0"):
            continue
        found.append(Reference(image=image, mode=reference.mode, strength=reference.strength,
                               start=reference.start, end=reference.end))
    return found
