"""What runs a job: one device, here (server/generate.py's LocalWorker) or a cluster replica
(server/cluster/).

The queue (queue.py) knows nothing else of a worker than this interface, so a studio's replicas are
one more implementation of it, not a second copy of the job-running code.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any, Protocol

from .job import Job


class Worker(Protocol):
    """Runs one job at a time on its own thread of the queue."""

    name: str  # "local", "underpaint-0": which one ran a job, in the job log

    @property
    def device(self) -> str:
        """What it runs on, for `welcome`: "cuda:0 (float16)", "cpu (float32) on 10.0.0.3"."""
        ...

    def loaded(self) -> Collection[str]:
        """The models resident now: a job for one of them starts without loading it."""
        ...

    def has(self, model: str) -> bool:
        """Whether it can run jobs for `model` (a replica whose file of that name differs cannot)."""
        ...

    def run(self, job: Job) -> Any:
        """Run `job` and return its result message, the images on disk already. Progress goes through
        `job.reply`; a cancel (`job.cancel_event`) stops it within a step, raising JobCancelledError.
        Raises WorkerLost when the device went away mid-job, a RequestError for what the client must
        hear, anything else for a fault."""
        ...

    def recover(self, stopping: threading.Event) -> bool:
        """After WorkerLost: wait until it can run jobs again; False once `stopping` is set first."""
        ...
