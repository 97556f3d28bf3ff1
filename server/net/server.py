"""The websocket server: listens, caps the open connections, and builds the parts that serve them
(registry, model cache, job handler, queue, job log) from a ServerConfig. A connection's frames are
handled in connection.py; inference happens on the job queue's worker (server/jobs/)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import CloseCode

from shared import codec
from shared.messages import Welcome

from .. import allocator
from ..config import ServerConfig
from ..errors import Busy
from ..generate import Generator
from ..imaging.outputs import OutputWriter
from ..jobs.log import JobLog
from ..jobs.queue import JobQueue
from ..models import schedulers
from ..models.loading import Acceleration, PipelineCache, resolve_device, resolve_dtype
from ..models.registry import Registry
from . import errors
from .connection import Connection

log = logging.getLogger("underpaint.server")

SERVER_NAME = "underpaint/0.1"
# A client that does not answer the closing handshake within this time is cut off, so stopping the
# server never waits long on one.
CLOSE_TIMEOUT = 2.0


class Server:
    def __init__(self, config: ServerConfig):
        config.check()
        allocator.use_one_arena()  # before the worker thread starts
        self.config = config
        self.registry = Registry(config.models)
        self.registry.scan()
        device = resolve_device(config.device)
        self.cache = PipelineCache(device, resolve_dtype(config.dtype, device), config.cache_size,
                                   on_broken=self.registry.mark_broken,
                                   acceleration=Acceleration(config.channels_last, config.compile))
        self.generator = Generator(self.registry, self.cache, OutputWriter(config.outputs))
        self.job_log = JobLog(config.log_file) if config.log_file else None
        self.queue = JobQueue(self.generator, errors.for_job, max_per_owner=config.max_queued_per_connection,
                              max_total=config.max_queued, on_end=self.job_log.record if self.job_log else None)
        self.connections: set[Connection] = set()
        self._numbers = itertools.count(1)
        self._refusing = False
        self._server: Any = None

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    @property
    def device(self) -> str:
        return f"{self.cache.device} ({str(self.cache.dtype).removeprefix('torch.')})"

    async def start(self) -> None:
        self.queue.start()
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
        )

    async def stop(self) -> None:
        await asyncio.to_thread(self.queue.stop)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.job_log is not None:
            self.job_log.close()

    async def run(self) -> None:
        """Serve until SIGINT or SIGTERM."""
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

    async def _handle(self, websocket: ServerConnection) -> None:
        if len(self.connections) >= self.config.max_connections:
            await self._refuse(websocket)
            return
        connection = Connection(self, websocket, next(self._numbers))
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            self._refusing = False

    async def _refuse(self, websocket: ServerConnection) -> None:
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
