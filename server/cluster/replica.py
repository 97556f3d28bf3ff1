"""One device of a cluster: the Ray Serve deployment that runs jobs with the same Generator as a single
machine, streams their progress back to the front end and stops one when told to.

Runs in a Ray worker process on any machine of the cluster; it reads the models from its own
`--models` path and writes nothing: the front end saves the results it sends back.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shared import errors as codes
from shared.messages import Generate, Result

from ..errors import RequestError
from ..generate import Generator, LocalWorker
from ..jobs.job import Job, JobCancelledError
from ..models.fingerprints import fingerprints
from ..models.loading import PipelineCache, resolve_device, resolve_dtype
from ..models.registry import Registry

log = logging.getLogger("underpaint.replica")

# Cancels that arrive before their job (they cross it on the network) are remembered this long.
MAX_EARLY_CANCELS = 64


@dataclass(frozen=True)
class ReplicaSettings:
    """What `underpaint serve --cluster` gives every replica: the same paths on every machine."""

    models: tuple[str, ...]
    device: str = "auto"
    dtype: str = "auto"
    cache_size: int = 1
    threads: int | None = None  # CPU threads for PyTorch; None: Ray's share of the machine
    loopback: bool = False  # a Ray of one machine's own: nothing listens beyond loopback


@dataclass(frozen=True)
class ReplicaInfo:
    """What a replica tells the front end about itself."""

    device: str
    node: str  # its machine's address in the cluster
    pid: int
    models: dict[str, str]  # "kind/name" -> fingerprint (server/models/fingerprints.py)
    loaded: list[str]


@dataclass(frozen=True)
class Ended:
    """A job's last item on the stream: its result, its error (code, message, field), or its cancel."""

    result: Result | None = None
    error: tuple[str, str, str | None] | None = None
    cancelled: bool = False
    loaded: list[str] = field(default_factory=list)
    costs: dict[str, float] = field(default_factory=dict)  # model -> UNet seconds per latent pixel here


class Replica:
    def __init__(self, settings: ReplicaSettings):
        import ray

        if settings.loopback:
            _serve_calls_on_loopback()
        if settings.threads:
            torch.set_num_threads(settings.threads)
        registry = Registry([Path(p) for p in settings.models])
        registry.scan()
        device = resolve_device(settings.device)
        cache = PipelineCache(device, resolve_dtype(settings.dtype, device), settings.cache_size,
                              on_broken=registry.mark_broken)
        self.worker = LocalWorker(Generator(registry, cache, outputs=None))
        self.models = fingerprints(registry)
        # The address its machine has in the cluster (loopback for a Ray of one machine's own).
        node = ray.get_runtime_context().get_node_id()
        self.node = next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node)
        # One thread: a job stopping after a cancel finishes its step before the next job starts.
        self._device = ThreadPoolExecutor(1, thread_name_prefix="underpaint-replica")
        self._jobs: dict[str, Job] = {}
        self._early_cancels: deque[str] = deque(maxlen=MAX_EARLY_CANCELS)

    async def describe(self) -> ReplicaInfo:
        return ReplicaInfo(device=self.worker.device, node=self.node, pid=os.getpid(), models=self.models,
                           loaded=list(self.worker.loaded()))

    async def cancel(self, key: str) -> None:
        job = self._jobs.get(key)
        if job is not None:
            job.cancel()
        else:
            self._early_cancels.append(key)

    async def run(self, key: str, request: Generate) -> AsyncIterator[Any]:
        """The job's progress messages as they come, then its `Ended`."""
        loop = asyncio.get_running_loop()
        replies: asyncio.Queue[Any] = asyncio.Queue()
        job = Job(request=request, owner=0,
                  reply=lambda message: loop.call_soon_threadsafe(replies.put_nowait, message))
        self._jobs[key] = job
        if key in self._early_cancels:
            job.cancel()
        ended = False
        loop.run_in_executor(self._device, self._run, job)
        try:
            while not ended:
                message = await replies.get()
                ended = isinstance(message, Ended)
                yield message
        finally:
            del self._jobs[key]
            if not ended:  # the front end stopped listening: nobody wants the picture
                job.cancel()

    def _run(self, job: Job) -> None:
        """On the device's thread: every job ends with exactly one `Ended`."""
        result, error, cancelled = None, None, False
        try:
            job.raise_if_cancelled()
            result = self.worker.run(job)
        except JobCancelledError:
            cancelled = True
        except RequestError as exc:
            error = (exc.code, exc.message, exc.field)
        except Exception:
            log.exception("job %s failed", job.id)
            error = (codes.INTERNAL, "the replica failed to run this job; see its log", None)
        cache = self.worker.generator.cache
        job.reply(Ended(result=result, error=error, cancelled=cancelled, loaded=list(self.worker.loaded()),
                        costs=cache.step_costs.on(str(cache.device))))

def _serve_calls_on_loopback() -> None:
    """Ray Serve starts a gRPC server in every replica for calls between deployments (the front end
    makes none) on every interface, with no setting for it; on one machine it is moved to loopback.
    It is started once the replica is made, so this runs first."""
    from ray.serve._private import replica as serve_replica

    bind = getattr(serve_replica, "add_port_to_grpc_server", None)
    if bind is None:  # another Ray Serve: its test (tests/test_cluster.py) says what listens where
        log.warning("this Ray Serve's replicas may listen beyond loopback")
        return
    serve_replica.add_port_to_grpc_server = lambda server, address: bind(server, address.replace("[::]", "127.0.0.1"))
