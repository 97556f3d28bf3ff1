"""A real `python -m server serve` in a process of its own, as artists run it: for the tests that
start it late, kill and restart it, and for the benchmarks, which read its resident memory without
their own allocations mixed in."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .tiny_models import write_tiny_models

ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = Path(tempfile.gettempdir()) / "underpaint-bench-models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_models() -> Path:
    """A models folder with the tiny random-weight models, written once per machine."""
    write_tiny_models(TINY_MODELS)
    return TINY_MODELS


class ServerProcess:
    """The server on `port` (a free one by default) with `models` (the tiny models by default); its
    results, console output (server.log) and job log (jobs.log) go to `folder` (a new temporary one
    by default). `with ServerProcess() as server:` starts it and stops it with SIGTERM; `start()` and
    `kill()` restart it at the same port."""

    def __init__(self, models: Path | None = None, folder: Path | None = None, *extra: str,
                 port: int | None = None, token: str | None = None, threads: int = 1,
                 environment: dict[str, str] | None = None):
        self.models = models
        self.folder = folder or Path(tempfile.mkdtemp(prefix="underpaint-server-"))
        self.extra = extra + (("--token", token) if token else ())
        self.port = port or free_port()
        self.threads = threads
        self.environment = environment or {}
        self.log = self.folder / "server.log"
        self.log_file = self.folder / "jobs.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> None:
        models = self.models or tiny_models()
        command = [sys.executable, "-m", "server", "serve", "--models", str(models), "--port", str(self.port),
                   "--outputs", str(self.folder / "outputs"), "--log-file", str(self.log_file), *self.extra]
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(self.threads), **self.environment)
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as sink:  # a file, not a pipe: an unread pipe would block the server
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it; killed if it has not ended within 30 s."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rss(self) -> int:
        """The server's resident memory in bytes."""
        import psutil

        assert self.process is not None
        return psutil.Process(self.process.pid).memory_info().rss

    def job_lines(self) -> list[dict[str, Any]]:
        """The server's job log so far, one dict per job."""
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text(encoding="utf-8").splitlines() if line]
