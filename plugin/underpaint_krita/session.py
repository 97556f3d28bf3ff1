"""One open document's Underpaint state and what the artist and the server do to it: its jobs, its
history of results, what its preview layer shows, the layers linked to its jobs (region prompts,
control layers, reference pictures: linked_layers.py), the control layers the server makes from its
canvas, and its live session.

Krita-free. The controller keeps one session per open document and routes to it: the artist's
actions to the active document's session, the server's messages to the session whose job they
answer. A session never talks to the server itself: it returns what is to be sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from shared.messages import (
    Cancelled,
    Error,
    FillMode,
    Finalize,
    Generate,
    Image,
    Limits,
    LiveStop,
    Preprocess,
    Progress,
    Queued,
    Result,
)

from . import naming
from .controls import ControlLayer
from .errors import (
    CONNECTION_LOST,
    NO_RESULT,
    SERVER_BACK,
    UserError,
    artist_message,
)
from .history import Entry, History
from .linked_layers import LayerStore, LinkedLayers
from .live import LiveCanvas, LiveResult, LiveSession
from .requests import Settings, Upscaling, build_preprocess, build_request, build_upscale

log = logging.getLogger(__name__)
WAITING = "Waiting for the server…"
# The server no longer had the frame's latents (a newer frame replaced them, or it restarted).
APPLIED_PREVIEW = "Added the layer “{}” from the live preview: the full-quality picture was no longer available."
CANCELLED = "Cancelled."
SERVER_STOPPING = "server stopping"  # the reason of `cancelled` when the server shuts down (docs/protocol.md)
LIVE = "live"  # DocumentSession.shown when the preview layer shows the live picture


class Document(LiveCanvas, LayerStore, Protocol):
    """A document as a session sees it (plugin/document.py wraps Krita's)."""

    def show_preview(self, name: str, image: Image) -> None:
        """Show `image` in the one locked preview layer on top, replacing what it showed."""

    def hide_preview(self) -> None:
        """Hide the preview layer (kept, so showing the next result adds no undo step)."""

    def add_result_layer(self, name: str, image: Image) -> None:
        """A new paint layer holding `image` at its canvas position, above the active layer."""

    def add_hidden_layer(self, name: str, image: Image) -> str:
        """Like `add_result_layer`, but hidden, and the active layer stays the artist's; returns the new
        layer's id."""

    def scale_with_layer(self, scale: int, name: str, image: Image) -> None:
        """Scale the canvas `scale` times each way as Image > Scale Image does (Krita resamples every
        layer), then add `image` (rgba8 or png) as a new layer on top of it (docs/upscale.md)."""

    def load_history(self) -> bytes | None: ...

    def save_history(self, blob: bytes) -> None: ...

    def layer_thumbnail(self, layer_id: str, side: int) -> Image | None:
        """A small picture of a layer, at most side² pixels, read without ending a stroke; None when
        the layer no longer exists."""

    def busy(self) -> bool:
        """True while the artist paints (a pointer button held, a stroke open or still being
        processed): reading the canvas or writing the preview now would end the stroke."""


@dataclass
class Job:
    request: Generate | Preprocess
    state: str = "waiting"  # waiting (for a connection), queued, running
    position: int = 0
    step: int = 0
    total: int = 0
    tile: int | None = None  # of a step done in tiles
    tiles: int | None = None
    preview: Image | None = None
    upscale: bool = False  # an upscale of the canvas, applied as it arrives

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def makes_control(self) -> bool:
        """A control image made from the canvas (`preprocess`)."""
        return isinstance(self.request, Preprocess)


@dataclass
class WaitingLayer:
    """A layer to add once the artist stops painting: a result, or a control image of `control`'s kind."""

    name: str
    image: Image
    control: str | None = None


class DocumentSession:
    def __init__(self, document: Document, history: History, layers: LinkedLayers | None = None):
        self.document = document
        self.history = history
        self.layers = layers if layers is not None else LinkedLayers(document)
        self.jobs: list[Job] = []
        self.shown: str | None = None  # the entry in the preview layer, or LIVE
        self.live: LiveSession | None = None  # live mode is on
        self.live_result: LiveResult | None = None  # the newest live picture, kept after live mode ends
        # (name, picture) to show once the artist stops painting: writing the preview mid-stroke ends it.
        self.waiting_preview: tuple[str, Image] | None = None
        # Live pictures being applied: frame id -> the picture, while the server decodes it at full quality.
        self.applying: dict[str, LiveResult] = {}
        self.waiting_layers: list[WaitingLayer] = []  # to add once the artist stops painting
        # (scale, layer name, picture) of an upscale to apply once the artist stops painting.
        self.waiting_upscale: tuple[int, str, Image] | None = None
        self.message = ""  # the last error or notice for this document

    @classmethod
    def open(cls, document: Document, history_limit: int) -> DocumentSession:
        """The session of a document seen for the first time, with the history, regions, control layers
        and reference pictures stored in it."""
        return cls(document, _stored_history(document, history_limit), LinkedLayers.stored(document))

    # --- the artist's actions --------------------------------------------------------------------

    def start_job(self, settings: Settings, job_id: str, connected: bool) -> Generate:
        """A job for this document with `settings`; returns its request, for the controller to send."""
        layers = self.layers
        request = build_request(self.document, settings, job_id, regions=layers.regions, controls=layers.controls,
                                references=layers.references)
        self.jobs.append(Job(request))
        self.message = "" if connected else WAITING
        return request

    def start_upscale(self, settings: Settings, upscaling: Upscaling, job_id: str, connected: bool,
                      limits: Limits) -> Generate:
        """An upscale of this document's canvas; returns its request, for the controller to send."""
        request = build_upscale(self.document, settings, upscaling, job_id, limits, controls=self.layers.controls,
                                references=self.layers.references)
        self.jobs.append(Job(request, upscale=True))
        self.message = "" if connected else WAITING
        return request

    def start_preprocess(self, kind: str, fill: FillMode, job_id: str, connected: bool) -> Preprocess:
        """A control image of `kind` made from the canvas as a generate with `fill` reads it; returns its
        request, for the controller to send. It comes in as a new layer, a control of that kind."""
        self.layers.controls.check_room()
        request = build_preprocess(self.document, kind, fill, job_id)
        self.jobs.append(Job(request))
        self.message = "" if connected else WAITING
        return request

    def making_control(self) -> bool:
        """Whether a control image is being made from the canvas."""
        return any(job.makes_control for job in self.jobs)

    def show(self, entry_id: str) -> None:
        entry = self._entry(entry_id)
        self.waiting_preview = None
        self.document.show_preview(naming.preview_name(entry.prompt), entry.image())
        self.shown = entry.id

    def apply(self, entry_id: str | None = None) -> tuple[str, Finalize | None]:
        """Copy a result (default: the one shown, live or not) into a new layer; returns the layer's name
        and, for a live picture the server made with its tiny autoencoder, the `finalize` to send: that
        layer comes when the server has decoded the frame at full quality (docs/live.md)."""
        if entry_id is None and self.shown == LIVE and self.live_result is not None:
            live = self.live_result
            name = naming.live_name(live.prompt, live.seed)
            if not live.full_quality:
                if live.id in self.applying:
                    return name, None  # asked for already
                self.applying[live.id] = live
                self.message = f"Applying “{name}” at full quality…"
                return name, Finalize(id=live.id)
            image = live.image
        else:
            entry = self._entry(entry_id or self.shown or "")
            name, image = naming.generated_name(entry.prompt, entry.seed), entry.image()
        self._hide_preview()
        self.document.add_result_layer(name, image)
        self.shown = None
        self.message = f"Added the layer “{name}”."
        return name, None

    def discard(self, entry_id: str) -> None:
        self._entry(entry_id)
        self.history.remove(entry_id)
        if self.shown == entry_id:
            self._hide_preview()
            self.shown = None
        self.document.save_history(self.history.to_blob())

    def set_live(self, on: bool) -> LiveStop | None:
        """Start or stop live mode (the last live picture stays to apply); returns the message that
        tells the server a live session ended."""
        if on and self.live is None:
            self.live = LiveSession()
        elif not on and self.live is not None:
            stop = LiveStop(session=self.live.id)
            self.live = None
            return stop
        return None

    # --- the server's answers ----------------------------------------------------------------------

    def owns(self, job_id: str) -> bool:
        """Whether `job_id` is one of this document's jobs or live frames."""
        return ((self.live is not None and self.live.owns(job_id)) or self._job(job_id) is not None
                or job_id in self.applying)

    def connected(self) -> None:
        if self.message == WAITING:
            self.message = ""
        elif self.message == artist_message(CONNECTION_LOST):
            self.message = artist_message(SERVER_BACK)

    def receive(self, message: Any) -> None:
        """A server message about one of this document's jobs or live frames."""
        if message.id in self.applying:
            self._receive_applied(message)
            return
        if self.live is not None and self.live.owns(message.id):
            self._receive_live(message)
            return
        job = self._job(message.id)
        if job is None:
            return
        if isinstance(message, Queued):
            job.state, job.position = "queued", message.position
        elif isinstance(message, Progress):
            job.state, job.step, job.total = "running", message.step, message.total
            job.tile, job.tiles = message.tile, message.tiles
            job.preview = message.preview or job.preview
        elif isinstance(message, Result) and job.makes_control:
            self._finish(job.id, "")
            if message.images:
                kind = job.request.kind
                self.waiting_layers.append(WaitingLayer(naming.control_name(kind), message.images[0].image, kind))
        elif isinstance(message, Result) and job.upscale:
            self._finish(job.id, "")
            if message.images:
                scale = job.request.scale
                self.waiting_upscale = (scale, naming.upscaled_name(job.request.prompt, scale), message.images[0].image)
        elif isinstance(message, Result):
            self._finish(job.id, "")
            self._store(job.request, message)
        elif isinstance(message, Cancelled):
            stopped = message.reason == SERVER_STOPPING
            self._finish(job.id, artist_message(CONNECTION_LOST) if stopped else CANCELLED)
        elif isinstance(message, Error):
            self._finish(job.id, artist_message(message.code, message.message))

    def fail(self, job_id: str, code: str, detail: str | None = None, address: str | None = None) -> None:
        """A job or live frame that will get no answer (the connection's `Failed`)."""
        if job_id in self.applying:
            self._applied(job_id, None)
        elif self.live is not None and self.live.owns(job_id):
            self.live.finish(job_id)  # a lost live frame needs no word: the next change sends a new one
        else:
            self._finish(job_id, artist_message(code, detail, address))

    def _receive_live(self, message: Any) -> None:
        """Live pictures replace each other in the preview layer; superseded frames pass silently."""
        if not isinstance(message, (Result, Cancelled, Error)):
            return
        prompt = self.live.finish(message.id)
        if isinstance(message, Result) and message.images:
            item = message.images[0]
            self.live_result = LiveResult(message.id, prompt, item.image, item.seed,
                                          full_quality=message.info.get("decoder") == "vae")
            self.waiting_preview = (naming.preview_name(prompt), item.image)
            self.shown = LIVE
            self.message = ""
        elif isinstance(message, Error):
            self.message = artist_message(message.code, message.message)

    def _receive_applied(self, message: Any) -> None:
        if isinstance(message, Result) and message.images:
            self._applied(message.id, message.images[0].image)
        elif isinstance(message, (Result, Cancelled, Error)):
            self._applied(message.id, None)

    def _applied(self, frame_id: str, image: Image | None) -> None:
        """The full-quality picture of a live frame being applied, or None when the server cannot give it:
        the preview's picture is applied then. The layer is added once the artist stops painting."""
        live = self.applying.pop(frame_id)
        name = naming.live_name(live.prompt, live.seed)
        self.waiting_layers.append(WaitingLayer(name, image if image is not None else live.image))
        if self.shown == LIVE and self.live_result is live:
            self._hide_preview()
            self.shown = None
        self.message = f"Added the layer “{name}”." if image is not None else APPLIED_PREVIEW.format(name)

    def add_waiting_layers(self) -> None:
        """Add the layers that arrived while the artist painted (the controller calls this only when
        the stroke guard allows touching the canvas)."""
        layers, self.waiting_layers = self.waiting_layers, []
        for layer in layers:
            if layer.control is None:
                self.document.add_result_layer(layer.name, layer.image)
            else:
                self._add_control_layer(layer)

    def _add_control_layer(self, layer: WaitingLayer) -> None:
        """The layer, hidden (its black would cover the canvas the next picture is made from), made a
        control of its kind; when the artist added controls meanwhile up to the limit, it stays a plain
        layer and the message says why."""
        layer_id = self.document.add_hidden_layer(layer.name, layer.image)
        try:
            self.layers.set_control(ControlLayer(layer_id, layer.control))
        except UserError as exc:
            self.message = f"Added the layer “{layer.name}”, but not as a control: {exc}"
            return
        self.message = f"Added the control layer “{layer.name}” (hidden; it steers the next pictures)."

    def _store(self, request: Generate, result: Result) -> None:
        entries = [Entry.from_result(f"{request.id}-{i}", request, item.image, item.seed)
                   for i, item in enumerate(result.images)]
        for entry in entries:
            self.history.add(entry)
        if self.shown is not None and self.history.get(self.shown) is None:
            self.shown = None
        self.document.save_history(self.history.to_blob())
        if entries:
            first = entries[0]
            self.waiting_preview = (naming.preview_name(first.prompt, naming.detail_note(result.info)), first.image())
            self.shown = first.id

    def show_waiting_preview(self) -> None:
        """Show the picture that arrived while the artist painted (the controller calls this only
        when the stroke guard allows touching the canvas)."""
        if self.waiting_preview is not None:
            (name, image), self.waiting_preview = self.waiting_preview, None
            self.document.show_preview(name, image)

    def apply_waiting_upscale(self) -> None:
        """Scale the canvas and add the upscaled picture that arrived (the controller calls this only when
        the stroke guard allows touching the canvas)."""
        if self.waiting_upscale is not None:
            (scale, name, image), self.waiting_upscale = self.waiting_upscale, None
            self._hide_preview()
            self.shown = None
            self.document.scale_with_layer(scale, name, image)
            self.message = f"Scaled the canvas {scale}x and added the layer “{name}”."

    def _hide_preview(self) -> None:
        self.waiting_preview = None
        self.document.hide_preview()

    def _finish(self, job_id: str, message: str) -> None:
        job = self._job(job_id)
        if job is not None:
            self.jobs.remove(job)
            self.message = message

    # --- helpers -----------------------------------------------------------------------------------

    def _job(self, job_id: str) -> Job | None:
        return next((job for job in self.jobs if job.id == job_id), None)

    def _entry(self, entry_id: str) -> Entry:
        entry = self.history.get(entry_id)
        if entry is None:
            raise UserError(NO_RESULT)
        return entry


def _stored_history(document: Document, limit: int) -> History:
    blob = document.load_history()
    if blob:
        try:
            return History.from_blob(blob, limit)
        except ValueError as exc:
            log.warning("starting a new history: %s", exc)
    return History(limit)

