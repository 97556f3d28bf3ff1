"""A blocking protocol v1 client: the command-line client, the Krita plugin's network thread,
the tests and the benchmarks all talk to the server through it.

`websockets` is imported when connecting, not at import time, so the rest of `shared`
stays importable with msgpack alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from . import PROTOCOL_VERSION, codec
from .errors import ProtocolError
from .messages import Cancelled, Error, Finalize, Generate, Hello, ListModels, ModelInfo, ModelList, Result, Welcome
from .training import Train


class ServerError(Exception):
    """The server answered a request with `error`."""

    def __init__(self, error: Error):
        where = f" (field {error.field!r})" if error.field else ""
        super().__init__(f"{error.code}: {error.message}{where}")
        self.error = error


class JobCancelled(Exception):
    """The job ended with `cancelled` instead of a result."""


class NotUnderpaint(ConnectionError):
    """Something answers at the address, but not as an Underpaint server does (a web server, another
    websocket service): retrying will not help, another address will."""

    def __init__(self, url: str, why: str):
        self.address = address(url)
        super().__init__(f"something at {self.address} is not an Underpaint server ({why})")


def address(url: str) -> str:
    """`host:port` of a websocket URL, the port filled in where the URL leaves it out."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or url
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port or (443 if parts.scheme == 'wss' else 80)}"


class Client:
    """One websocket connection that has said `hello`."""

    def __init__(self, url: str, *, name: str = "underpaint-client", token: str | None = None,
                 open_timeout: float = 10.0, max_size: int = 256 * 1024 * 1024):
        from websockets.exceptions import InvalidHandshake
        from websockets.sync.client import connect

        try:
            # Entered by hand because the connection outlives this call; close() leaves it.
            self._ws = connect(url, open_timeout=open_timeout, max_size=max_size, compression=None).__enter__()
        except InvalidHandshake as exc:  # an HTTP server, or no HTTP at all
            raise NotUnderpaint(url, str(exc)) from exc
        try:
            self.send(Hello(protocol=PROTOCOL_VERSION, client=name, token=token))
            try:
                reply = self.receive(timeout=open_timeout)
            except ProtocolError as exc:  # a websocket service speaking something else
                raise NotUnderpaint(url, f"its first message: {exc}") from exc
            if isinstance(reply, Error):
                raise ServerError(reply)
            if not isinstance(reply, Welcome):
                raise NotUnderpaint(url, f"it answered hello with {reply.TYPE!r}")
        except BaseException:
            self._ws.close()
            raise
        self.welcome: Welcome = reply

    def send(self, message: Any) -> None:
        self._ws.send(codec.encode(message))

    def send_raw(self, frame: bytes | str) -> None:
        self._ws.send(frame)

    def receive(self, timeout: float | None = None) -> Any:
        return codec.decode_server(self._ws.recv(timeout=timeout))

    def messages(self, timeout: float | None = None) -> Iterator[Any]:
        while True:
            yield self.receive(timeout=timeout)

    def models(self) -> list[ModelInfo]:
        self.send(ListModels())
        for message in self.messages():
            if isinstance(message, ModelList):
                return message.models

    def generate(self, request: Generate, on_message: Callable[[Any], None] | None = None,
                 timeout: float | None = None) -> Result:
        """Send one job and wait for its terminal message; other jobs' messages go to `on_message`."""
        return self._result_of(request, on_message, timeout)

    def finalize(self, frame_id: str, on_message: Callable[[Any], None] | None = None,
                 timeout: float | None = None) -> Result:
        """The live frame `frame_id` at full quality (docs/live.md), as `generate` waits for a result."""
        return self._result_of(Finalize(id=frame_id), on_message, timeout)

    def train(self, request: Train, on_message: Callable[[Any], None] | None = None,
              timeout: float | None = None) -> Result:
        """Train a LoRA or an embedding (shared/training.py) and wait for its result, as `generate` does."""
        return self._result_of(request, on_message, timeout)

    def _result_of(self, request: Generate | Finalize | Train, on_message: Callable[[Any], None] | None,
                   timeout: float | None) -> Result:
        self.send(request)
        for message in self.messages(timeout=timeout):
            if on_message is not None:
                on_message(message)
            if getattr(message, "id", None) != request.id:
                continue
            if isinstance(message, Result):
                return message
            if isinstance(message, Error):
                raise ServerError(message)
            if isinstance(message, Cancelled):
                raise JobCancelled(message.reason or "cancelled")
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
