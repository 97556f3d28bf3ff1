"""What the plugin does, without Krita or Qt: the docker and the tests drive it the same way.

It owns the connection, the server's state, the docker's settings and one `DocumentSession` per
open document, and routes: the artist's actions go to the active document's session, the
server's messages to the session whose job they answer. The UI calls the actions and `poll()`
from a timer, and re-reads the state when a subscriber is told something changed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from shared.messages import Cancelled, Error, Image, Limits, ListModels, ModelInfo, ModelList, Result, Welcome

from . import networks
from .choices import Choices, checkpoint
from .connection import Connected, Connection, Disconnected, Failed, Received
from .controls import ControlLayer
from .errors import NO_DOCUMENT, PLUGIN_FAULT, TRAINING_RUNS, UserError, artist_message
from .history import DEFAULT_LIMIT
from .preferences import DETAIL, FILL, SERVER_URL, TOKEN, MemoryPreferences, Preferences
from .references import ReferenceLayer
from .regions import RegionPrompt
from .requests import Settings, Upscaling, detail, fill_mode
from .session import Document, DocumentSession
from .stroke_guard import StrokeGuard
from .styles import Style, StyleLibrary
from .training import Picture, TrainingRun, TrainingSettings, build_train

log = logging.getLogger(__name__)
T = TypeVar("T")


class Workspace(Protocol):
    def active_document(self) -> Document | None:
        """The document the artist works on; equal (==) to earlier wrappers of the same document."""

    def is_open(self, document: Document) -> bool: ...


@dataclass
class ServerState:
    connected: bool = False
    message: str = "Connecting…"
    welcome: Welcome | None = None

    @property
    def models(self) -> list[str]:
        """The checkpoints that can be used, by name."""
        return [m.name for m in self.listed() if m.usable_checkpoint]

    @property
    def refused(self) -> list[ModelInfo]:
        """Checkpoints the server found but cannot use, each with the reason."""
        return [m for m in self.listed() if m.kind == "checkpoint" and m.refused]

    def listed(self) -> list[ModelInfo]:
        """Every model the server listed, refused ones included."""
        return self.welcome.models if self.welcome is not None else []


def _reports_errors(action: Callable[..., T]) -> Callable[..., T | None]:
    """The one error path of UI actions: failures become the active document's message."""

    @functools.wraps(action)
    def wrapper(self: Controller, *args: Any, **kwargs: Any) -> T | None:
        try:
            return action(self, *args, **kwargs)
        except UserError as exc:
            self._tell(str(exc))
        except Exception as exc:
            log.exception("%s failed", action.__name__)
            self._tell(artist_message(PLUGIN_FAULT, f"{type(exc).__name__}: {exc}"))
        return None

    return wrapper


class Controller:
    def __init__(self, connection: Connection, workspace: Workspace, history_limit: int = DEFAULT_LIMIT,
                 clock: Callable[[], float] = time.monotonic, preferences: Preferences | None = None,
                 styles: StyleLibrary | None = None):
        self.connection = connection
        self.clock = clock
        self.workspace = workspace
        self.history_limit = history_limit
        self.preferences = preferences if preferences is not None else MemoryPreferences()
        self.choices = Choices(self.preferences, styles if styles is not None else StyleLibrary(None))
        self.settings = self.choices.settings  # changed in place, never replaced
        self.upscaling = Upscaling()
        self.server = ServerState()
        self.guard = StrokeGuard()
        self._sessions: list[DocumentSession] = []
        self.training: TrainingRun | None = None  # the latest training started from the Train dialog
        self._listeners: list[Callable[[], None]] = []
        self._orphan_message = ""

    # --- observing ---------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def session(self) -> DocumentSession | None:
        """The active document's session (opened, with what the document stores, on first use)."""
        document = self.workspace.active_document()
        if document is None:
            return None
        for session in self._sessions:
            if session.document == document:
                return session
        session = DocumentSession.open(document, self.history_limit)
        self._sessions.append(session)
        return session

    @property
    def message(self) -> str:
        session = self.session()
        return session.message if session is not None else self._orphan_message

    # --- actions: to the active document's session --------------------------------------------

    @_reports_errors
    def generate(self) -> str:
        """Start a job for the active document with the current settings (and style); returns its id."""
        session = self._require_session()
        request = session.start_job(self.choices.for_request(), uuid.uuid4().hex, self.server.connected)
        self.connection.submit(request)
        self.choices.recent.add(self.settings.prompt)
        self._changed()
        return request.id

    @_reports_errors
    def upscale(self) -> str:
        """Upscale the active document's canvas as `upscaling` says; returns the job's id. The canvas is
        scaled and the result added as a layer when it arrives (docs/upscale.md)."""
        limits = self.server.welcome.limits if self.server.welcome is not None else Limits()
        request = self._require_session().start_upscale(self.settings, self.upscaling, uuid.uuid4().hex,
                                                         self.server.connected, limits)
        self.connection.submit(request)
        self._changed()
        return request.id

    @_reports_errors
    def cancel(self) -> None:
        """Cancel the active document's jobs."""
        for job in self._require_session().jobs:
            self.connection.cancel(job.id)

    @_reports_errors
    def show(self, entry_id: str) -> None:
        self._require_session().show(entry_id)
        self._changed()

    @_reports_errors
    def apply(self, entry_id: str | None = None) -> str:
        """Copy a result (default: the one shown, live or not) into a new layer; returns the layer's name.
        A live picture's layer comes once the server has decoded it at full quality."""
        name, finalize = self._require_session().apply(entry_id)
        if finalize is not None:
            self.connection.submit(finalize)
        self._changed()
        return name

    @_reports_errors
    def discard(self, entry_id: str) -> None:
        self._require_session().discard(entry_id)
        self._changed()

    def regions(self) -> list[tuple[RegionPrompt, str]]:
        """The active document's region prompts with their layers' names, dropping those whose
        layer was deleted."""
        session = self.session()
        return session.layers.named_regions() if session is not None else []

    @_reports_errors
    def add_region(self, prompt: str, negative_prompt: str = "") -> str:
        """Make the active layer or group a region with this prompt (or give it a new one); returns
        its layer id."""
        limits = self.server.welcome.limits if self.server.welcome is not None else Limits()
        layer_id = self._require_session().layers.add_region(prompt, negative_prompt, limits.max_regions)
        self._changed()
        return layer_id

    @_reports_errors
    def remove_region(self, layer_id: str) -> None:
        self._require_session().layers.remove_region(layer_id)
        self._changed()

    def controls(self) -> list[tuple[ControlLayer, str]]:
        """The active document's control layers with their layers' names, dropping those whose layer
        was deleted."""
        session = self.session()
        return session.layers.named_controls() if session is not None else []

    @_reports_errors
    def add_control(self, kind: str) -> str:
        """Make the active layer a control of `kind`; returns its layer id."""
        layer_id = self._require_session().layers.add_control(kind)
        self._changed()
        return layer_id

    @_reports_errors
    def control_from_canvas(self, kind: str) -> str:
        """Have the server make a control image of `kind` from the canvas (the part a generate reads); it
        comes in as a new hidden layer, a control of that kind (docs/control.md). Returns the job's id."""
        request = self._require_session().start_preprocess(kind, self.settings.fill, uuid.uuid4().hex,
                                                          self.server.connected)
        self.connection.submit(request)
        self._changed()
        return request.id

    @_reports_errors
    def set_control(self, control: ControlLayer) -> None:
        """Change a control layer's kind, strength or range."""
        self._require_session().layers.set_control(control)
        self._changed()

    @_reports_errors
    def remove_control(self, layer_id: str) -> None:
        self._require_session().layers.remove_control(layer_id)
        self._changed()

    @_reports_errors
    def set_live(self, on: bool) -> None:
        """Start or stop live mode for the active document; the last live picture stays to apply."""
        stop = self._require_session().set_live(on)
        if stop is not None:
            self.connection.submit(stop)
        self._changed()

    # --- reference pictures (references.py) --------------------------------------------------

    def references(self) -> list[tuple[ReferenceLayer, str]]:
        """The active document's reference pictures with their layers' names, dropping those whose layer
        was deleted."""
        session = self.session()
        return session.layers.named_references() if session is not None else []

    def layer_thumbnail(self, layer_id: str, side: int) -> Image | None:
        """A small picture of one of the active document's layers; None when it is gone."""
        session = self.session()
        return session.document.layer_thumbnail(layer_id, side) if session is not None else None

    @_reports_errors
    def add_reference(self, mode: str) -> str:
        """Make the active layer a reference picture in `mode`; returns its layer id."""
        layer_id = self._require_session().layers.add_reference(mode)
        self._changed()
        return layer_id

    @_reports_errors
    def add_reference_picture(self, path: str, mode: str) -> str:
        """Import a picture file as a new hidden layer and make it a reference in `mode`; returns its
        layer id."""
        layer_id = self._require_session().layers.add_reference_picture(path, mode)
        self._changed()
        return layer_id

    @_reports_errors
    def set_reference(self, reference: ReferenceLayer) -> None:
        """Change a reference picture's mode, strength or range."""
        self._require_session().layers.set_reference(reference)
        self._changed()

    @_reports_errors
    def remove_reference(self, layer_id: str) -> None:
        self._require_session().layers.remove_reference(layer_id)
        self._changed()

    # --- training (training.py): one run at a time, not tied to a document ----------------------

    def train(self, settings: TrainingSettings, pictures: list[Picture]) -> TrainingRun:
        """Start training on `pictures` as `settings` say; UserError (for the dialog to show) when the
        choices cannot make a request, or a run is still going."""
        if self.training is not None and not self.training.finished:
            raise UserError(TRAINING_RUNS)
        limits = self.server.welcome.limits if self.server.welcome is not None else Limits()
        request = build_train(settings, pictures, uuid.uuid4().hex, self.server.listed(), limits)
        self.training = TrainingRun(request)
        if self.server.connected:
            self.training.message = "Sent to the server…"
        self.connection.submit(request)
        self._changed()
        return self.training

    def cancel_training(self) -> None:
        if self.training is not None and not self.training.finished:
            self.connection.cancel(self.training.id)

    # --- settings -----------------------------------------------------------------------------

    def edit_settings(self, new: Settings) -> None:
        """The docker's controls say `new` now: what changed counts as the artist's choice (choices.py)."""
        before = dataclasses.astuple(self.settings)
        self.choices.edit(new, self.server.welcome)
        if dataclasses.astuple(self.settings) != before:
            self._changed()

    @_reports_errors
    def choose_style(self, name: str) -> None:
        """Use the style named `name` ("" for none) from now on, also after a restart."""
        self._tell(self.choices.choose_style(name, self.server.welcome))

    @_reports_errors
    def save_style(self, style: Style, replacing: str | None = None) -> None:
        """Save a new or edited style (`replacing` names the one it was, when renamed) and use it."""
        self.choices.save_style(style, replacing)
        self.choose_style(style.name.strip())

    @_reports_errors
    def delete_style(self, name: str) -> None:
        self.choices.delete_style(name)
        self.choices.follow_model(self.server.welcome)
        self._changed()

    def forget_changes(self) -> None:
        """Steps, CFG scale and sampler back to what the style sets and the model recommends."""
        self.choices.forget_changes(self.server.welcome)
        self._changed()

    def networks(self) -> list[ModelInfo]:
        """The LoRAs and embeddings that fit the chosen model (networks.py)."""
        model = checkpoint(self.server.welcome, self.settings.model)
        return networks.fitting(self.server.listed(), model.family if model is not None else None)

    def set_fill(self, fill: str) -> None:
        """Inpaint selections with this fill mode from now on, also after a restart."""
        self.settings.fill = fill_mode(fill)
        self.preferences.write(FILL, self.settings.fill)

    def set_detail(self, value: str) -> None:
        """Generate on canvases larger than the model's native area with this detail from now on, also
        after a restart."""
        self.settings.detail = detail(value)
        self.preferences.write(DETAIL, self.settings.detail)

    def upscalers(self) -> list[tuple[str, int | None]]:
        """The server's usable upscaler models: (name, scale)."""
        if self.server.welcome is None:
            return []
        return [(m.name, m.scale) for m in self.server.welcome.models if m.kind == "upscaler" and not m.refused]

    def set_server(self, url: str, token: str | None = None) -> None:
        """Connect to `url` now, and at the next start."""
        self.preferences.write(SERVER_URL, url)
        self.preferences.write(TOKEN, token or "")
        self.server = ServerState(message=f"Connecting to {url}…")
        self.connection.set_url(url, token)
        self._changed()

    # --- events from the network thread: to the session whose job they answer ---------------

    def poll(self) -> None:
        """Apply what the connection reported; call it often from the UI thread."""
        events = self.connection.events()
        if events:
            self._sessions = [s for s in self._sessions if self.workspace.is_open(s.document)]
        for event in events:
            try:
                self._handle(event)
            except Exception:  # one bad event must not stop the following ones
                log.exception("handling %s failed", type(event).__name__)
        if events:
            self._changed()
        self._write_waiting()
        self._live_tick()

    def _may_touch(self, document: Document) -> bool:
        """Whether the canvas may be read or the preview written now (stroke_guard.py)."""
        return self.guard.allows(document.busy(), self.clock())

    @_reports_errors
    def _write_waiting(self) -> None:
        """Show the pictures and add the layers that arrived while the artist painted; the docker is told,
        for what they change in it (a message, a new control layer)."""
        wrote = False
        for session in self._sessions:
            waiting = (session.waiting_preview is not None or session.waiting_layers
                       or session.waiting_upscale is not None)
            if waiting and self.workspace.is_open(session.document) and self._may_touch(session.document):
                session.show_waiting_preview()
                session.add_waiting_layers()
                session.apply_waiting_upscale()
                wrote = True
        if wrote:
            self._changed()

    @_reports_errors
    def _live_tick(self) -> None:
        if not any(s.live is not None for s in self._sessions):
            return
        session = self.session()
        if session is None or session.live is None or not self.server.connected:
            return
        layers = session.layers
        frame = session.live.next_frame(session.document, self.choices.for_request(), self.clock(),
                                        tuple(layers.regions), tuple(layers.controls), tuple(layers.references),
                                        may_read=lambda: self._may_touch(session.document))
        if frame is not None:
            self.connection.submit(frame)

    def _handle(self, event: Any) -> None:
        if isinstance(event, Connected):
            self.server = ServerState(True, f"Connected to {event.welcome.server} on {event.welcome.device}",
                                      event.welcome)
            if self.settings.model not in self.server.models and self.server.models:
                self.settings.model = self.server.models[0]
            self.choices.follow_model(event.welcome)
            for session in self._sessions:
                session.connected()
        elif isinstance(event, Disconnected):
            retry = f" Retrying in {event.retry_in:.0f} s." if event.retry_in >= 1 else ""
            welcome = self.server.welcome  # keep the model list while reconnecting
            self.server = ServerState(False, artist_message(event.code, address=event.address) + retry, welcome)
        elif isinstance(event, Failed) and self._trains(event.job_id):
            self.training.fail(event.code, event.detail, event.address)
        elif isinstance(event, Failed):
            owner = self._owner(event.job_id)
            if owner is not None:
                owner.fail(event.job_id, event.code, event.detail, event.address)
        elif isinstance(event, Received) and isinstance(event.message, ModelList):
            if self.server.welcome is not None:
                self.server.welcome = dataclasses.replace(self.server.welcome, models=event.message.models)
        elif isinstance(event, Received) and self._trains(getattr(event.message, "id", None)):
            self.training.receive(event.message)
            if isinstance(event.message, (Result, Cancelled)):
                # The new model is listed once its result is sent; a cancelled one keeps what it learnt.
                self.connection.submit(ListModels())
        elif isinstance(event, Received):
            job_id = getattr(event.message, "id", None)
            owner = self._owner(job_id) if job_id else None
            if owner is not None:
                owner.receive(event.message)
            elif isinstance(event.message, Error):
                log.warning("server error without a job: %s", event.message)

    # --- helpers -----------------------------------------------------------------------------

    def _trains(self, job_id: str | None) -> bool:
        return self.training is not None and job_id == self.training.id

    def _owner(self, job_id: str) -> DocumentSession | None:
        return next((session for session in self._sessions if session.owns(job_id)), None)

    def _require_session(self) -> DocumentSession:
        session = self.session()
        if session is None:
            raise UserError(NO_DOCUMENT)
        return session

    def _tell(self, message: str) -> None:
        session = self.session()
        if session is not None:
            session.message = message
        else:
            self._orphan_message = message
        self._changed()

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()
