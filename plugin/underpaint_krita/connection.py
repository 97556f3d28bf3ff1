"""The plugin's connection to the server, run on its own thread so Krita never waits for the network.

The UI thread calls `submit`, `cancel` and `set_url`, and drains `events()` from a timer. The
thread connects, reconnects with backoff, sends the outbox and turns every frame into an event.
A job is never dropped silently: it is sent once connected, or reported `Failed` when no
connection comes within `wait_limit` seconds, or when the connection dies while it runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import errors as codes
from shared.client import Client, NotUnderpaint, ServerError, address
from shared.errors import ProtocolError
from shared.messages import Cancel, Cancelled, Error, Finalize, Generate, Live, Preprocess, Result, Welcome
from shared.training import Train

from .errors import CONNECTION_LOST, DISCONNECTED, NOT_UNDERPAINT, SERVER_CHANGED, UNREACHABLE

log = logging.getLogger(__name__)

CLIENT_NAME = "underpaint-krita"
# How long `receive` blocks before the thread looks at the outbox again: the latency of a send.
POLL_SECONDS = 0.05
# Answers after which retrying the same way cannot help: jobs waiting to be sent fail at once.
_FATAL = {codes.UNAUTHORIZED, codes.PROTOCOL_MISMATCH, NOT_UNDERPAINT}
# Requests that end with a terminal message (result, cancelled or error) about their id.
_ANSWERED = (Generate, Finalize, Preprocess, Train)
# Jobs that wait in the outbox through a lost connection, for the next one.
_KEPT = (Generate, Preprocess, Train)


@dataclass
class Connected:
    welcome: Welcome


@dataclass
class Disconnected:
    code: str  # an errors.py / protocol code saying why
    detail: str
    retry_in: float
    address: str = ""  # host:port of the server it was (to be) connected to


@dataclass
class Received:
    message: Any


@dataclass
class Failed:
    """A job that will get no answer from the server."""

    job_id: str
    code: str
    detail: str | None = None
    address: str = ""  # host:port of the server it was for


Event = Connected | Disconnected | Received | Failed


class Backoff:
    """Delays between reconnect attempts: first, first*factor, ... up to `limit`."""

    def __init__(self, first: float = 0.5, factor: float = 2.0, limit: float = 10.0):
        self.first, self.factor, self.limit = first, factor, limit
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.limit, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.first


@dataclass
class _Pending:
    message: Any
    since: float


class Connection:
    """One server connection with an outbox; start() runs it, stop() ends it."""

    def __init__(self, url: str, *, token: str | None = None, wait_limit: float = 60.0,
                 backoff: Backoff | None = None, connect: Callable[..., Client] = Client,
                 clock: Callable[[], float] = time.monotonic):
        self._url, self._token = url, token
        self.wait_limit = wait_limit
        self._backoff = backoff or Backoff()
        self._connect, self._clock = connect, clock
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._outbox: list[_Pending] = []
        self._in_flight: set[str] = set()  # touched by the network thread only
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._reconnect = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def token(self) -> str | None:
        return self._token

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="underpaint-connection", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """End the thread; it is a daemon, so Krita never waits long for a connect in progress."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def set_url(self, url: str, token: str | None = None) -> None:
        """Connect to another server (or the same again, now): jobs waiting to be sent go there."""
        with self._lock:
            self._url, self._token = url, token
        self._backoff.reset()
        self._reconnect.set()
        self._wake.set()

    def submit(self, message: Any) -> None:
        """Queue a client message; it is sent as soon as a connection is up."""
        with self._lock:
            if isinstance(message, Live):
                # A newer frame of a live session makes an unsent older one pointless.
                for old in [p for p in self._outbox if isinstance(p.message, Live)
                            and p.message.session == message.session]:
                    self._outbox.remove(old)
                    self._events.put(Received(Cancelled(id=old.message.id, reason="superseded")))
            self._outbox.append(_Pending(message, self._clock()))
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Cancel a job: taken out of the outbox if not sent yet, else the server is asked."""
        with self._lock:
            for pending in self._outbox:
                if isinstance(pending.message, _KEPT) and pending.message.id == job_id:
                    self._outbox.remove(pending)
                    self._events.put(Received(Cancelled(id=job_id, reason="cancelled before it was sent")))
                    return
            self._outbox.append(_Pending(Cancel(id=job_id), self._clock()))
        self._wake.set()

    def events(self) -> list[Event]:
        """Everything that happened since the last call (non-blocking)."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    # --- the network thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._reconnect.clear()
            with self._lock:
                url, token = self._url, self._token
            try:
                client = self._connect(url, name=CLIENT_NAME, token=token, open_timeout=5.0)
            except ServerError as exc:
                self._disconnected(url, exc.error.code, exc.error.message)
                continue
            except NotUnderpaint as exc:
                self._disconnected(url, NOT_UNDERPAINT, str(exc))
                continue
            except Exception as exc:  # refused, unresolvable, timed out...
                self._disconnected(url, UNREACHABLE, str(exc) or type(exc).__name__)
                continue
            self._backoff.reset()
            self._events.put(Connected(client.welcome))
            lost = SERVER_CHANGED  # when asked to connect elsewhere (or to stop: then nobody hears it)
            try:
                self._serve(client)
            except Exception as exc:  # the socket died: say so, then reconnect at once
                log.info("connection to %s lost: %s", url, exc)
                self._events.put(Disconnected(DISCONNECTED, str(exc) or type(exc).__name__, 0.0, address(url)))
                lost = CONNECTION_LOST
            finally:
                client.close()
                self._lose_jobs(lost)

    def _serve(self, client: Client) -> None:
        while not (self._stopping.is_set() or self._reconnect.is_set()):
            self._wake.clear()
            self._send_outbox(client)
            try:
                message = client.receive(timeout=POLL_SECONDS)
            except TimeoutError:
                continue
            except ProtocolError as exc:  # a frame from a newer server: skip it, keep the connection
                log.warning("ignored a server frame: %s", exc)
                continue
            job_id = getattr(message, "id", None)
            if isinstance(message, (Result, Cancelled)) or (isinstance(message, Error) and job_id):
                self._in_flight.discard(job_id)
            self._events.put(Received(message))

    def _send_outbox(self, client: Client) -> None:
        while True:
            with self._lock:
                if not self._outbox:
                    return
                pending = self._outbox.pop(0)
            try:
                client.send(pending.message)
            except BaseException:
                with self._lock:
                    self._outbox.insert(0, pending)
                raise
            if isinstance(pending.message, _ANSWERED):
                self._in_flight.add(pending.message.id)

    def _lose_jobs(self, code: str) -> None:
        """The server forgets a closed connection's jobs and live frames: report them, and drop messages
        about them (a `finalize` too: the next connection has no frames to finalize)."""
        with self._lock:
            lost = [p.message.id for p in self._outbox if isinstance(p.message, Finalize)]
            self._outbox = [p for p in self._outbox if isinstance(p.message, _KEPT)]
        for job_id in sorted(self._in_flight) + lost:
            self._events.put(Failed(job_id, code))
        self._in_flight.clear()

    def _disconnected(self, url: str, code: str, detail: str) -> None:
        delay = self._backoff.next()
        self._events.put(Disconnected(code, detail, delay, address(url)))
        self._expire(url, code, detail, everything=code in _FATAL)
        self._wake.clear()
        deadline = self._clock() + delay
        while not (self._stopping.is_set() or self._reconnect.is_set()):
            left = deadline - self._clock()
            if left <= 0:
                return
            # Short waits, so jobs expire on time even during a long backoff.
            self._wake.wait(min(left, 0.5))
            self._wake.clear()
            self._expire(url, code, detail)

    def _expire(self, url: str, code: str, detail: str, everything: bool = False) -> None:
        """Report jobs that waited too long for a connection (all of them when waiting cannot help)."""
        now = self._clock()
        with self._lock:
            expired = [p for p in self._outbox if everything or now - p.since >= self.wait_limit]
            self._outbox = [p for p in self._outbox if all(p is not e for e in expired)]
        for pending in expired:
            if isinstance(pending.message, _ANSWERED):
                self._events.put(Failed(pending.message.id, code, detail, address(url)))
