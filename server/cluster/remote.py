"""A cluster replica as the front end's queue sees it: a worker (server/jobs/worker.py) whose jobs run
elsewhere, their progress streamed back over Ray Serve, their cancel sent after them, their results
written here before they are sent."""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.messages import Progress, Result

from ..errors import RequestError, WorkerLost
from ..imaging import payloads
from ..imaging.outputs import OutputWriter
from ..jobs.job import Job, JobCancelledError
from ..models.fingerprints import differing
from ..models.interrupts import StepCosts
from .replica import Ended, ReplicaInfo

log = logging.getLogger("underpaint.cluster")

# How long one look at a replica that is starting again may take before the next one.
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Estimates:
    """Where the front end keeps the step costs its `queued.estimate_s` is made from (models/interrupts.py),
    under its own device's name: the replicas measure them, and report them with each job."""

    steps: StepCosts
    device: str


class RemoteError(RequestError):
    """An error a replica reported for a job, with the code it gave."""

    def __init__(self, code: str, message: str, field: str | None):
        super().__init__(message, field)
        self.code = code


class RemoteWorker:
    """One replica (a Ray Serve deployment of one replica) behind `handle`."""

    def __init__(self, name: str, handle: Any, info: ReplicaInfo, reference: dict[str, str], outputs: OutputWriter,
                 costs: Estimates | None = None):
        self.name = name
        self.handle = handle
        self.reference = reference
        self.outputs = outputs
        self.costs = costs
        self._cancels = ThreadPoolExecutor(1, thread_name_prefix=f"underpaint-{name}-cancel")
        self._learn(info)

    def _learn(self, info: ReplicaInfo) -> None:
        self.info = info
        self._loaded = list(info.loaded)
        self.refused = differing(self.reference, info.models)
        if self.refused:
            log.error("%s on %s is refused: its files for %s differ from the front end's", self.name, info.node,
                      ", ".join(self.refused))

    @property
    def device(self) -> str:
        return f"{self.info.device} on {self.info.node}"

    def loaded(self) -> Collection[str]:
        return self._loaded

    def has(self, model: str) -> bool:
        return not self.refused and f"checkpoint/{model}" in self.info.models

    def run(self, job: Job) -> Result:
        import ray.exceptions

        request = job.request
        if request.seed is None:  # fixed before the first try, so that a re-run paints the same pixels
            request.seed = secrets.randbelow(2**32)
        key = uuid.uuid4().hex
        # The cancel travels on its own thread: Job.cancel is called on the event loop.
        job.on_cancel = lambda: self._cancels.submit(self._cancel, key)
        if job.cancelled:
            self._cancels.submit(self._cancel, key)
        try:
            for message in self.handle.options(stream=True).run.remote(key, request):
                if isinstance(message, Ended):
                    return self._ended(job, message)
                if isinstance(message, Progress):
                    job.step, job.total = message.step, message.total
                job.reply(message)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            raise WorkerLost(f"the machine running this job ({self.device}) stopped; it was run again elsewhere "
                             "and that one stopped too") from exc
        finally:
            job.on_cancel = None
        raise WorkerLost(f"{self.name} ended the job without a result")

    def _cancel(self, key: str) -> None:
        try:
            self.handle.cancel.remote(key).result(timeout_s=PROBE_TIMEOUT)
        except Exception as exc:  # the job's stream says what became of it
            log.warning("could not tell %s to cancel: %s", self.name, exc)

    def _ended(self, job: Job, ended: Ended) -> Result:
        self._loaded = ended.loaded
        if self.costs is not None:
            for model, cost in ended.costs.items():
                self.costs.steps.learn(model, self.costs.device, cost)
        if ended.cancelled:
            raise JobCancelledError
        if ended.error is not None:
            raise RemoteError(*ended.error)
        result = ended.result
        assert result is not None
        for item in result.images:
            self.outputs.save(payloads.to_pil(item.image, "result"), result.info, item.seed)
        return result

    def recover(self, stopping: threading.Event) -> bool:
        """Wait for Ray Serve to start the replica again, then check its files anew."""
        while not stopping.is_set():
            try:
                info = self.handle.describe.remote().result(timeout_s=PROBE_TIMEOUT)
            except Exception:
                stopping.wait(1.0)
                continue
            self._learn(info)
            return True
        return False
