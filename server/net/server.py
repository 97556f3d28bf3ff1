"""The websocket server: listens, caps the open connections, and builds the parts that serve them
(registry, model cache, job handler, queue, job log) from a ServerConfig. A connection's frames are
handled in connection.py; inference happens on the job queue's workers (server/jobs/): this machine's
device, or with `--cluster` the replicas of a Ray cluster (server/cluster/)."""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import logging
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import websockets
from websockets.asyncio.server import serve
from websockets.frames import CloseCode

from shared import codec
from shared.messages import Progress, Queued, Welcome

from ..config import ServerConfig
from ..errors import Busy, RequestError
from ..generate import Generator, LocalWorker
from ..imaging.outputs import OutputWriter
from ..jobs.log import JobLog
from ..jobs.queue import JobQueue
from ..models import schedulers
from ..models.loading import Acceleration, PipelineCache, resolve_device, resolve_dtype
from ..models.registry import Registry
from ..training.runner import Trainer
from . import errors, pacing
from .connection import Connection
from .ingress import IngressConnection, Receiving

log = logging.getLogger("underpaint.server")

SERVER_NAME = "underpaint/0.1"
# A client that does not answer the closing handshake within this time is cut off, so stopping the
# server never waits long on one.
CLOSE_TIMEOUT = 2.0
# A client says hello within milliseconds of connecting (a round trip, even over a VPN); a connection
# that has not after this long counts against the server's `hello_slots`.
HELLO_GRACE = 2.0
# Threads decoding large frames and checking job requests; each connection uses one at a time.
READERS = 4
# How long a thread running Python keeps the interpreter before another may take it (Python's default:
# 5 ms). The event loop and the threads it hands short I/O to (a model rescan makes about a hundred
# system calls) wait up to this long after each call while a reading thread parses prompts: at 1 ms a
# `models` round trip took 100-240 ms during such parsing on a quiet machine, at 0.2 ms it stays under
# 20 ms (docs/reliability.md). A thread is asked to hand over only while another waits for its turn,
# so a job running alone is not interrupted more often.
SWITCH_INTERVAL = 0.0002


def _unattended(message: Any) -> None:
    """Where the messages of a training resumed at start go: no client asked for it."""
    if not isinstance(message, (Progress, Queued)):
        log.info("resumed training: %s", message)


def tune_interpreter() -> None:
    """Process-wide settings for a process that serves: the imports (torch, diffusers) leave about a
    million objects that every full garbage collection would walk, holding every thread for up to
    half a second, so they are frozen out of collection; threads take turns more often."""
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)


class Server:
    def __init__(self, config: ServerConfig):
        config.check()
        self.config = config
        self.registry = Registry(config.models)
        self.registry.scan()
        device = resolve_device(config.device)
        self.cache = PipelineCache(device, resolve_dtype(config.dtype, device), config.cache_size,
                                   on_broken=self.registry.mark_broken,
                                   acceleration=Acceleration(config.channels_last, config.compile))
        outputs = OutputWriter(config.outputs)
        outputs.clean()
        # On a cluster the front end's own generator only checks requests; replicas run them.
        self.generator = Generator(self.registry, self.cache, outputs)
        self.cluster = None
        self.trainer: Trainer | None = None
        if config.cluster:
            from ..cluster.launch import Cluster
            from ..cluster.remote import Estimates

            estimates = Estimates(self.cache.step_costs, str(self.cache.device))
            self.cluster = Cluster.start(config, self.registry, outputs, estimates)
            self.workers = list(self.cluster.workers)
        else:
            if config.models:
                self.trainer = Trainer(self.registry, self.cache.device, self.cache.dtype, config.outputs, outputs)
            self.workers = [LocalWorker(self.generator, self.trainer)]
        self.job_log = JobLog(config.log_file) if config.log_file else None
        self.queue = JobQueue(self.workers, errors.for_job, max_per_owner=config.max_queued_per_connection,
                              max_total=config.max_queued, bytes_per_owner=config.connection_queue_budget,
                              bytes_total=config.queue_budget, on_end=self.job_log.record if self.job_log else None)
        self.receiving = Receiving(config.receive_budget)
        self.readers = ThreadPoolExecutor(READERS, thread_name_prefix="underpaint-read")
        self.connections: set[Connection] = set()
        self._numbers = itertools.count(1)
        self._refusing = False
        self._server: Any = None

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    @property
    def device(self) -> str:
        """What `welcome` says the jobs run on: the device, or every replica's."""
        if self.cluster is None:
            return self.workers[0].device
        count = f"{len(self.workers)} replica" + ("s" if len(self.workers) > 1 else "")
        return f"{count}: " + "; ".join(f"{w.name} {w.device}" for w in self.workers)

    async def start(self) -> None:
        self.queue.start()
        if self.trainer is not None:
            for job in await asyncio.to_thread(self.trainer.unfinished, _unattended):
                try:
                    self.queue.submit(job)
                except RequestError as exc:
                    log.error("training %s cannot be resumed: %s", job.id, exc)
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            max_size=self.config.limits.max_message,
            compression=None,
            origins=[None, *self.config.allowed_origins],
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            close_timeout=CLOSE_TIMEOUT,
            create_connection=functools.partial(IngressConnection, receiving=self.receiving,
                                                limit=pacing.HELLO_MESSAGE),
        )

    async def stop(self) -> None:
        await asyncio.to_thread(self.queue.stop)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.readers.shutdown(wait=False, cancel_futures=True)
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.stop)
        if self.job_log is not None:
            self.job_log.close()

    async def run(self) -> None:
        """Serve until SIGINT or SIGTERM, owning the process."""
        tune_interpreter()
        await self.start()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stopped.set)
            except NotImplementedError:  # Windows: Ctrl+C still raises KeyboardInterrupt
                pass
        log.info("serving on ws://%s:%d on %s", self.config.host, self.port, self.device)
        await stopped.wait()
        log.info("stopping")
        await self.stop()

    def welcome(self) -> Welcome:
        return Welcome(
            server=SERVER_NAME,
            device=self.device,
            models=[entry.info() for entry in self.registry.entries()],
            schedulers=list(schedulers.SAMPLERS),
            scheduler_labels=schedulers.labels(),
            limits=self.config.limits,
        )

    async def _handle(self, websocket: IngressConnection) -> None:
        if not self._make_room():
            await self._refuse(websocket)
            return
        connection = Connection(self, websocket, next(self._numbers))
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            self._refusing = False

    def _make_room(self) -> bool:
        """Whether a new connection may open. When every slot is taken, the connection that has waited
        longest for its hello makes room (told `busy`); only when all have said hello is the newcomer
        refused. And of the connections that have waited longer than a hello takes, no more than
        `hello_slots` are kept. Strangers who open connections and say nothing then only ever push each
        other out, never a client that has said hello, and a newcomer (the artist) always gets in
        (docs/reliability.md, "Connections")."""
        staying = [c for c in self.connections if not c.leaving]
        waiting = sorted((c for c in staying if c.waiting_for_hello), key=lambda c: c.opened_at)
        if len(staying) >= self.config.max_connections:
            if not waiting:
                return False
            waiting[0].cut(pacing.busy(f"all {self.config.max_connections} connections are taken; this one waited "
                                       "longest without saying hello and makes room for a newer one"))
            return True
        now = time.monotonic()
        stale = [c for c in waiting if now - c.opened_at > HELLO_GRACE]
        if len(stale) >= self.config.hello_slots:
            stale[0].cut(pacing.busy(f"{len(stale)} connections have waited over {HELLO_GRACE:g} s without saying "
                                     "hello, the most the server keeps; this one waited longest"))
        return True

    async def _refuse(self, websocket: IngressConnection) -> None:
        """Tell a connection over the cap why at once, then close it."""
        limit = self.config.max_connections
        if not self._refusing:  # once per episode: a client retrying in a loop must not flood the log
            log.warning("refusing connections: %d are open, the most allowed (--max-connections)", limit)
            self._refusing = True
        refusal = errors.for_message(Busy(f"the server already has {limit} connections open, the most it accepts "
                                          "(--max-connections); close one or try again later"))
        try:
            await websocket.send(codec.encode(refusal))
            # A client sends its hello as soon as it is connected; closing before that hello arrives would
            # make its send fail, and it would never read the reason. A silent one is cut off all the same.
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await websocket.recv()
        except (websockets.ConnectionClosed, TimeoutError):
            pass
        await websocket.close(CloseCode.TRY_AGAIN_LATER, "too many connections")
