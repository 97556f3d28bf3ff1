"""A real Underpaint server on a free loopback port, run in a background thread of the test process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from server.config import ServerConfig
from server.server import Server


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
