"""A real `underpaint serve` process with the tiny test models, for the benchmarks.

The server runs in its own process, as artists run it, so its resident memory can be read
without the benchmark's own allocations mixed in.
"""

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

import psutil

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(tempfile.gettempdir()) / "underpaint-bench-models"


def tiny_models() -> Path:
    """The tiny random-weight models of tests/tiny_models.py, written once."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from tiny_models import write_tiny_models
    finally:
        sys.path.remove(str(ROOT / "tests"))
    write_tiny_models(MODELS)
    return MODELS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess() as server:` starts a server on a free port and stops it with SIGTERM."""

    def __init__(self, *extra: str, threads: int = 2):
        self.folder = Path(tempfile.mkdtemp(prefix="underpaint-bench-"))
        self.port = free_port()
        self.log_file = self.folder / "jobs.log"
        self.extra = extra
        self.threads = threads
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        command = [sys.executable, "-m", "server", "serve", "--models", str(tiny_models()), "--port",
                   str(self.port), "--outputs", str(self.folder / "outputs"), "--log-file", str(self.log_file),
                   *self.extra]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(self.threads)}
        self._log = open(self.folder / "server.log", "w")  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start; see {self.folder / 'server.log'}") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()

    def rss(self) -> int:
        """The server's resident memory in bytes."""
        assert self.process is not None
        return psutil.Process(self.process.pid).memory_info().rss

    def job_lines(self) -> list[dict[str, Any]]:
        """The server's job log so far, one dict per job."""
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text(encoding="utf-8").splitlines() if line]
