"""A real Underpaint server on a free loopback port, run in a background thread of this process,
and what tests and benchmarks send it and read back from it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from server.config import ServerConfig
from server.net.server import Server
from shared.client import Client
from shared.messages import Generate, Queued


@contextmanager
def running_server(config: ServerConfig) -> Iterator[Server]:
    """Start `config` on port 0 (a free port) and stop it afterwards; `server.port` tells the port."""
    server = Server(replace(config, port=0))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # reported to the test thread below
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="underpaint-test-server", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise failure[0]
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}"


@contextmanager
def connected(models: list[Path], folder: Path) -> Iterator[Client]:
    """A client that has said hello to a server of the models folders `models`, writing its results under
    `folder`."""
    config = ServerConfig(models=models, outputs=folder / "outputs")
    with running_server(config) as server, Client(url(server), name="test") as client:
        yield client


def tiny_request(**fields) -> Generate:
    """A small txt2img job on the tiny SD1.5 model; `fields` override the defaults."""
    defaults = {"id": uuid.uuid4().hex, "mode": "txt2img", "model": "tiny-sd15", "prompt": "a red circle",
                "width": 64, "height": 64, "steps": 2, "seed": 1}
    return Generate(**{**defaults, **fields})


def slow_request(**fields) -> Generate:
    """A job that runs long enough (150 steps at 256 px) to be cancelled or disconnected mid-way."""
    return tiny_request(**{"width": 256, "height": 256, "steps": 150, **fields})


def wait_until(condition, timeout: float = 15, what: str = "condition") -> None:
    """Poll `condition()` until it holds; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def job_log(server: Server) -> dict[str, dict]:
    """The server's job log (its config's `log_file`) so far, by job id."""
    path = server.config.log_file
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return {line["id"]: line for line in map(json.loads, text.splitlines())}


def wait_for_log(server: Server, ids, timeout: float = 30) -> dict[str, dict]:
    """The job log once it has a line for each of `ids`: those jobs have ended."""
    deadline = time.monotonic() + timeout
    while not set(ids) <= set(lines := job_log(server)):
        assert time.monotonic() < deadline, f"no log line for {set(ids) - set(lines)}"
        time.sleep(0.05)
    return lines


def nothing_queued(server: Server, token: str | None = None) -> bool:
    """Whether the server has no job queued or running, as a client sees it: a new job is told it is first."""
    positions: list[int] = []
    probe = tiny_request(steps=1)

    def note(message: object) -> None:
        if isinstance(message, Queued) and message.id == probe.id:
            positions.append(message.position)

    with Client(url(server), name="probe", token=token) as client:
        client.generate(probe, on_message=note, timeout=60)
    return positions == [0]
