"""What the plugin does, without Krita or Qt: the docker and the tests drive it the same way.

It owns the connection and one session per open document (its history, the result shown in
the preview layer, its running jobs). The UI calls the actions and `poll()` from a timer, and
re-reads the state when a subscriber is told something changed.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from shared.messages import Cancelled, Error, Generate, Image, LiveStop, Progress, Queued, Result, Welcome

from . import naming
from .connection import Connected, Connection, Disconnected, Failed, Received
from .errors import NO_DOCUMENT, NO_LAYER, NO_RESULT, PLUGIN_FAULT, UserError, artist_message
from .history import DEFAULT_LIMIT, Entry, History
from .live import LiveCanvas, LiveResult, LiveSession
from .regions import RegionPrompt, Regions
from .requests import Settings, build_request, fill_mode
from .stroke_guard import StrokeGuard

log = logging.getLogger(__name__)
T = TypeVar("T")
WAITING = "Waiting for the server…"
LIVE = "live"  # Session.shown when the preview layer shows the live picture
FILL_KEY = "fill"  # the preference holding the fill mode


class Document(LiveCanvas, Protocol):
    """A document as the controller sees it (plugin/document.py wraps Krita's)."""

    def show_preview(self, name: str, image: Image) -> None:
        """Show `image` in the one locked preview layer on top, replacing what it showed."""

    def hide_preview(self) -> None:
        """Hide the preview layer (kept, so showing the next result adds no undo step)."""

    def add_result_layer(self, name: str, image: Image) -> None:
        """A new paint layer holding `image` at its canvas position, above the active layer."""

    def load_history(self) -> bytes | None: ...

    def save_history(self, blob: bytes) -> None: ...

    def load_regions(self) -> bytes | None: ...

    def save_regions(self, blob: bytes) -> None: ...

    def active_layer_id(self) -> str | None:
        """The uniqueId of the layer or group the artist selected (never the preview layer)."""

    def layer_name(self, layer_id: str) -> str | None:
        """The name of a layer or group; None when it no longer exists."""

    def busy(self) -> bool:
        """True while the artist paints (a pointer button held, a stroke open or still being
        processed): reading the canvas or writing the preview now would end the stroke."""


class Preferences(Protocol):
    """Choices kept across restarts of the docker and of Krita (Krita's settings in the plugin)."""

    def read(self, key: str) -> str | None: ...

    def write(self, key: str, value: str) -> None: ...


class MemoryPreferences:
    """Preferences that last as long as the object: where nothing outlives the controller (scripts, tests)."""

    def __init__(self, values: dict[str, str] | None = None):
        self.values = dict(values or {})

    def read(self, key: str) -> str | None:
        return self.values.get(key)

    def write(self, key: str, value: str) -> None:
        self.values[key] = value


class Workspace(Protocol):
    def active_document(self) -> Document | None:
        """The document the artist works on; equal (==) to earlier wrappers of the same document."""

    def is_open(self, document: Document) -> bool: ...


@dataclass
class Job:
    request: Generate
    state: str = "waiting"  # waiting (for a connection), queued, running
    position: int = 0
    step: int = 0
    total: int = 0
    preview: Image | None = None

    @property
    def id(self) -> str:
        return self.request.id


@dataclass
class Session:
    document: Document
    history: History
    shown: str | None = None  # the entry in the preview layer, or LIVE
    jobs: list[Job] = field(default_factory=list)
    live: LiveSession | None = None  # live mode is on
    live_result: LiveResult | None = None  # the newest live picture, kept after live mode ends
    waiting_preview: tuple[str, Image] | None = None  # (name, picture) to show once the artist stops painting
    regions: Regions = field(default_factory=Regions)
    message: str = ""  # the last error or notice for this document


@dataclass
class ServerState:
    connected: bool = False
    message: str = "Connecting…"
    welcome: Welcome | None = None

    @property
    def models(self) -> list[str]:
        if self.welcome is None:
            return []
        return [m["name"] for m in self.welcome.models
                if m.get("kind", "checkpoint") == "checkpoint" and not m.get("refused")]


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
                 clock: Callable[[], float] = time.monotonic, preferences: Preferences | None = None):
        self.connection = connection
        self.clock = clock
        self.workspace = workspace
        self.history_limit = history_limit
        self.preferences = preferences if preferences is not None else MemoryPreferences()
        self.settings = Settings(fill=fill_mode(self.preferences.read(FILL_KEY)))
        self.server = ServerState()
        self.guard = StrokeGuard()
        self._sessions: list[Session] = []
        self._listeners: list[Callable[[], None]] = []
        self._orphan_message = ""

    # --- observing ---------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def session(self) -> Session | None:
        """The active document's session (created, with its stored history, on first use)."""
        document = self.workspace.active_document()
        if document is None:
            return None
        for session in self._sessions:
            if session.document == document:
                return session
        session = Session(document, self._load_history(document), regions=self._load_regions(document))
        self._sessions.append(session)
        return session

    @property
    def message(self) -> str:
        session = self.session()
        return session.message if session is not None else self._orphan_message

    # --- actions -----------------------------------------------------------------------------

    @_reports_errors
    def generate(self) -> str:
        """Start a job for the active document with the current settings; returns its id."""
        session = self._require_session()
        request = build_request(session.document, self.settings, uuid.uuid4().hex, regions=session.regions)
        session.jobs.append(Job(request))
        session.message = "" if self.server.connected else WAITING
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
        session = self._require_session()
        entry = self._entry(session, entry_id)
        session.waiting_preview = None
        session.document.show_preview(naming.preview_name(entry.prompt), entry.image())
        session.shown = entry.id
        self._changed()

    @_reports_errors
    def apply(self, entry_id: str | None = None) -> str:
        """Copy a result (default: the one shown, live or not) into a new layer; returns the layer's name."""
        session = self._require_session()
        if entry_id is None and session.shown == LIVE and session.live_result is not None:
            live = session.live_result
            name, image = naming.live_name(live.prompt, live.seed), live.image
        else:
            entry = self._entry(session, entry_id or session.shown or "")
            name, image = naming.generated_name(entry.prompt, entry.seed), entry.image()
        self._hide_preview(session)
        session.document.add_result_layer(name, image)
        session.shown = None
        session.message = f"Added the layer “{name}”."
        self._changed()
        return name

    @_reports_errors
    def discard(self, entry_id: str) -> None:
        session = self._require_session()
        self._entry(session, entry_id)
        session.history.remove(entry_id)
        if session.shown == entry_id:
            self._hide_preview(session)
            session.shown = None
        session.document.save_history(session.history.to_blob())
        self._changed()

    def regions(self) -> list[tuple[RegionPrompt, str]]:
        """The active document's region prompts with their layers' names, dropping those whose
        layer was deleted."""
        session = self.session()
        if session is None:
            return []
        named = [(region, session.document.layer_name(region.layer_id)) for region in session.regions]
        if any(name is None for _, name in named):
            for region, name in named:
                if name is None:
                    session.regions.remove(region.layer_id)
            session.document.save_regions(session.regions.to_json())
        return [(region, name) for region, name in named if name is not None]

    @_reports_errors
    def add_region(self, prompt: str, negative_prompt: str = "") -> str:
        """Make the active layer or group a region with this prompt (or give it a new one); returns
        its layer id."""
        session = self._require_session()
        layer_id = session.document.active_layer_id()
        if layer_id is None:
            raise UserError(NO_LAYER)
        session.regions.set(RegionPrompt(layer_id, prompt, negative_prompt))
        session.document.save_regions(session.regions.to_json())
        self._changed()
        return layer_id

    @_reports_errors
    def remove_region(self, layer_id: str) -> None:
        session = self._require_session()
        session.regions.remove(layer_id)
        session.document.save_regions(session.regions.to_json())
        self._changed()

    @_reports_errors
    def set_live(self, on: bool) -> None:
        """Start or stop live mode for the active document; the last live picture stays to apply."""
        session = self._require_session()
        if on and session.live is None:
            session.live = LiveSession()
        elif not on and session.live is not None:
            self.connection.submit(LiveStop(session=session.live.id))
            session.live = None
        self._changed()

    def set_fill(self, fill: str) -> None:
        """Inpaint selections with this fill mode from now on, also after a restart."""
        self.settings.fill = fill_mode(fill)
        self.preferences.write(FILL_KEY, self.settings.fill)

    def set_server(self, url: str, token: str | None = None) -> None:
        self.server = ServerState(message=f"Connecting to {url}…")
        self.connection.set_url(url, token)
        self._changed()

    # --- events from the network thread ------------------------------------------------------

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
        self._show_waiting_previews()
        self._live_tick()

    def _may_touch(self, document: Document) -> bool:
        """Whether the canvas may be read or the preview written now (stroke_guard.py)."""
        return self.guard.allows(document.busy(), self.clock())

    @_reports_errors
    def _show_waiting_previews(self) -> None:
        for session in self._sessions:
            if (session.waiting_preview is not None and self.workspace.is_open(session.document)
                    and self._may_touch(session.document)):
                (name, image), session.waiting_preview = session.waiting_preview, None
                session.document.show_preview(name, image)

    @_reports_errors
    def _live_tick(self) -> None:
        if not any(s.live is not None for s in self._sessions):
            return
        session = self.session()
        if session is None or session.live is None or not self.server.connected:
            return
        frame = session.live.next_frame(session.document, self.settings, self.clock(), tuple(session.regions),
                                        may_read=lambda: self._may_touch(session.document))
        if frame is not None:
            self.connection.submit(frame)

    def _handle(self, event: Any) -> None:
        if isinstance(event, Connected):
            self.server = ServerState(True, f"Connected to {event.welcome.server} on {event.welcome.device}",
                                      event.welcome)
            if not self.settings.model and self.server.models:
                self.settings.model = self.server.models[0]
            for session in self._sessions:
                if session.message == WAITING:
                    session.message = ""
        elif isinstance(event, Disconnected):
            retry = f" Retrying in {event.retry_in:.0f} s." if event.retry_in >= 1 else ""
            welcome = self.server.welcome  # keep the model list while reconnecting
            self.server = ServerState(False, artist_message(event.code) + retry, welcome)
        elif isinstance(event, Failed):
            live = next((s for s in self._sessions if s.live is not None and s.live.owns(event.job_id)), None)
            if live is not None:  # a lost live frame needs no word: the next change sends a new one
                live.live.finish(event.job_id)
            else:
                self._finish(event.job_id, artist_message(event.code, event.detail))
        elif isinstance(event, Received):
            self._receive(event.message)

    def _receive(self, message: Any) -> None:
        job_id = getattr(message, "id", None)
        live = next((s for s in self._sessions if s.live is not None and s.live.owns(job_id)), None)
        if live is not None:
            self._receive_live(live, message)
            return
        found = self._job(job_id) if job_id else None
        if found is None:
            if isinstance(message, Error):
                log.warning("server error without a job: %s", message)
            return
        session, job = found
        if isinstance(message, Queued):
            job.state, job.position = "queued", message.position
        elif isinstance(message, Progress):
            job.state, job.step, job.total = "running", message.step, message.total
            job.preview = message.preview or job.preview
        elif isinstance(message, Result):
            self._finish(job.id, "")
            self._store(session, job.request, message)
        elif isinstance(message, Cancelled):
            self._finish(job.id, "Cancelled.")
        elif isinstance(message, Error):
            self._finish(job.id, artist_message(message.code, message.message))

    def _receive_live(self, session: Session, message: Any) -> None:
        """Live pictures replace each other in the preview layer; superseded frames pass silently."""
        if not isinstance(message, (Result, Cancelled, Error)):
            return
        prompt = session.live.finish(message.id)
        if isinstance(message, Result) and message.images:
            item = message.images[0]
            session.live_result = LiveResult(prompt, item.image, item.seed)
            session.waiting_preview = (naming.preview_name(prompt), item.image)
            session.shown = LIVE
            session.message = ""
        elif isinstance(message, Error):
            session.message = artist_message(message.code, message.message)

    def _store(self, session: Session, request: Generate, result: Result) -> None:
        entries = [Entry.from_result(f"{request.id}-{i}", request, item.image, item.seed)
                   for i, item in enumerate(result.images)]
        for entry in entries:
            session.history.add(entry)
        if session.shown is not None and session.history.get(session.shown) is None:
            session.shown = None
        session.document.save_history(session.history.to_blob())
        if entries and self.workspace.is_open(session.document):
            first = entries[0]
            session.waiting_preview = (naming.preview_name(first.prompt), first.image())
            session.shown = first.id

    @staticmethod
    def _hide_preview(session: Session) -> None:
        session.waiting_preview = None
        session.document.hide_preview()

    def _finish(self, job_id: str, message: str) -> None:
        found = self._job(job_id)
        if found is not None:
            session, job = found
            session.jobs.remove(job)
            session.message = message

    # --- helpers -----------------------------------------------------------------------------

    def _job(self, job_id: str) -> tuple[Session, Job] | None:
        for session in self._sessions:
            for job in session.jobs:
                if job.id == job_id:
                    return session, job
        return None

    def _require_session(self) -> Session:
        session = self.session()
        if session is None:
            raise UserError(NO_DOCUMENT)
        return session

    @staticmethod
    def _entry(session: Session, entry_id: str) -> Entry:
        entry = session.history.get(entry_id)
        if entry is None:
            raise UserError(NO_RESULT)
        return entry

    def _load_history(self, document: Document) -> History:
        blob = document.load_history()
        if blob:
            try:
                return History.from_blob(blob, self.history_limit)
            except ValueError as exc:
                log.warning("starting a new history: %s", exc)
        return History(self.history_limit)

    @staticmethod
    def _load_regions(document: Document) -> Regions:
        blob = document.load_regions()
        if blob:
            try:
                return Regions.from_json(blob)
            except ValueError as exc:
                log.warning("starting without regions: %s", exc)
        return Regions()

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

