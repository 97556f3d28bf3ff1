"""The websocket server: handshake, decoding, dispatch. Inference happens elsewhere (jobs.py)."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import secrets
import signal
from collections import deque
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import CloseCode

from shared import PROTOCOL_VERSION, codec, errors
from shared.errors import ProtocolError
from shared.messages import (
    Cancel,
    Error,
    Generate,
    Hello,
    ListModels,
    Live,
    LiveStop,
    LiveStopped,
    ModelList,
    Progress,
    Welcome,
)

from . import schedulers
from .config import ServerConfig
from .generate import Generator
from .joblog import JobLog
from .jobs import Job, JobQueue
from .loading import PipelineCache, resolve_device, resolve_dtype
from .outputs import OutputWriter
from .registry import Registry

log = logging.getLogger("underpaint.server")

SERVER_NAME = "underpaint/0.1"
# Progress frames are disposable: past this many unsent frames for one client, older progress
# is dropped so a slow reader cannot make the server buffer without bound.
MAX_PENDING_PROGRESS = 8
# A client that does not read its replies is not read from either: past this many unsent frames the
# server stops taking its requests, so the replies to a flood of requests cannot pile up.
MAX_UNSENT = 64
# A client that does not answer the closing handshake within this time is cut off, so stopping the
# server never waits long on one.
CLOSE_TIMEOUT = 2.0


class Server:
    def __init__(self, config: ServerConfig):
        config.check()
        self.config = config
        self.registry = Registry(config.models)
        self.registry.scan()
        device = resolve_device(config.device)
        self.cache = PipelineCache(device, resolve_dtype(config.dtype, device), config.cache_size,
                                   on_broken=self.registry.mark_broken)
        self.generator = Generator(self.registry, self.cache, OutputWriter(config.outputs))
        self.job_log = JobLog(config.log_file) if config.log_file else None
        self.queue = JobQueue(self.generator, max_per_owner=config.max_queued_per_connection,
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
        refusal = Error(code=errors.BUSY, message=f"the server already has {limit} connections open, the most it "
                        "accepts (--max-connections); close one or try again later")
        try:
            await websocket.send(codec.encode(refusal))
            # A client sends its hello as soon as it is connected; closing before that hello arrives would
            # make its send fail, and it would never read the reason. A silent one is cut off all the same.
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await websocket.recv()
        except (websockets.ConnectionClosed, TimeoutError):
            pass
        await websocket.close(CloseCode.TRY_AGAIN_LATER, "too many connections")


class Connection:
    """One client: reads frames in order, writes replies from any thread through one outbox."""

    def __init__(self, server: Server, websocket: ServerConnection, number: int):
        self.server = server
        self.websocket = websocket
        self.number = number
        self.greeted = False
        self._loop = asyncio.get_running_loop()
        self._outbox: deque[tuple[bool, bytes]] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._writer_gone = False
        self._live_seeds: dict[str, int] = {}

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        try:
            async for frame in self.websocket:
                await self._receive(frame)
                if self._closing:
                    break
                await asyncio.sleep(0)  # the replies just made reach the outbox before its size is checked
                await self._drained.wait()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.server.queue.cancel_owner(self.number, "client disconnected")
            self._closing = True
            self._ready.set()
            await writer

    # Replies come from the loop and from the worker thread.
    def reply(self, message: Any) -> None:
        frame = codec.encode(message)
        self._loop.call_soon_threadsafe(self._enqueue, isinstance(message, Progress), frame)

    def _enqueue(self, disposable: bool, frame: bytes) -> None:
        if self._writer_gone:
            return  # nothing can reach this client any more
        if disposable and sum(1 for d, _ in self._outbox if d) >= MAX_PENDING_PROGRESS:
            oldest = next(i for i, (d, _) in enumerate(self._outbox) if d)
            del self._outbox[oldest]
        self._outbox.append((disposable, frame))
        if len(self._outbox) >= MAX_UNSENT:
            self._drained.clear()
        self._ready.set()

    def unsent(self) -> tuple[int, int]:
        """(frames, bytes) waiting for this client: the outbox plus the socket's write buffer."""
        frames = list(self._outbox)  # one C-level copy: safe while the loop appends
        transport = self.websocket.transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return len(frames), sum(len(frame) for _, frame in frames) + buffered

    async def _write(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._outbox:
                    _, frame = self._outbox.popleft()
                    await self.websocket.send(frame)
                    if len(self._outbox) < MAX_UNSENT:
                        self._drained.set()
                if self._closing:
                    await self.websocket.close()
                    return
        except websockets.ConnectionClosed:
            pass
        finally:
            self._writer_gone = True
            self._outbox.clear()
            self._drained.set()  # the reader must not wait on a writer that is gone

    async def _receive(self, frame: bytes | str) -> None:
        try:
            message = codec.decode_client(frame, self.server.config.limits)
            await self._dispatch(message)
        except ProtocolError as exc:
            self.reply(codec.error_message(exc))
            if isinstance(exc, _Fatal):
                self._closing = True
        except Exception:
            log.exception("unexpected failure handling a message")
            self.reply(Error(code=errors.INTERNAL, message="the server could not handle this message"))

    async def _dispatch(self, message: Any) -> None:
        if isinstance(message, Hello):
            self._hello(message)
        elif not self.greeted:
            raise ProtocolError(errors.UNAUTHORIZED, "send 'hello' before anything else", "type")
        elif isinstance(message, ListModels):
            await asyncio.to_thread(self.server.registry.scan)
            self.reply(ModelList(models=[e.info() for e in self.server.registry.entries()]))
        elif isinstance(message, Live):
            self._live(message)
        elif isinstance(message, LiveStop):
            self._live_seeds.pop(message.session, None)
            self.server.queue.cancel_owner(self.number, "live stopped", session=message.session)
            self.reply(LiveStopped(session=message.session))
        elif isinstance(message, Generate):
            self._generate(message)
        elif isinstance(message, Cancel):
            if not self.server.queue.cancel(self.number, message.id):
                error = ProtocolError(errors.NOT_FOUND, f"no queued or running job {message.id!r}", "id")
                error.id = message.id
                raise error

    def _hello(self, hello: Hello) -> None:
        if hello.protocol != PROTOCOL_VERSION:
            raise _Fatal(errors.PROTOCOL_MISMATCH,
                         f"this server speaks protocol {PROTOCOL_VERSION}, the client {hello.protocol}", "protocol")
        expected = self.server.config.token
        if expected and not hmac.compare_digest((hello.token or "").encode(), expected.encode()):
            raise _Fatal(errors.UNAUTHORIZED, "wrong or missing token", "token")
        self.greeted = True
        self.reply(self.server.welcome())

    def _generate(self, request: Generate, session: str | None = None) -> None:
        try:
            self.server.generator.check(request)
            self.server.queue.submit(Job(request=request, owner=self.number, reply=self.reply, session=session))
        except ProtocolError as exc:
            exc.id = request.id
            raise

    def _live(self, frame: Live) -> None:
        if frame.mode == "txt2img":
            error = errors.bad_request("mode", "live frames refine the canvas: use mode 'img2img' or 'inpaint'")
            error.id = frame.id
            raise error
        # One seed per session, so only the strokes change the picture from frame to frame.
        if frame.seed is None:
            frame.seed = self._live_seeds.setdefault(frame.session, secrets.randbelow(2**32))
        self._generate(frame, session=frame.session)


class _Fatal(ProtocolError):
    """An error after which the connection is closed."""

