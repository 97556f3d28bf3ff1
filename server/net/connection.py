"""One client: its frames read in order and answered, its replies written from any thread through
one outbox that a slow reader cannot grow without bound, and how it sends watched (pacing.py)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

import websockets

from shared import codec
from shared.errors import ProtocolError
from shared.messages import (
    Cancel,
    Finalize,
    Generate,
    Hello,
    ListModels,
    Live,
    LiveStop,
    LiveStopped,
    ModelList,
    Preprocess,
    Progress,
    Welcome,
)
from shared.training import Train

from ..config import ServerConfig
from ..errors import BadInput, Busy, NotFound, RequestError, Unauthorized, Unsupported
from ..generate import Generator
from ..jobs.job import Job
from ..jobs.queue import JobQueue
from ..models.registry import Registry
from ..training.runner import Trainer
from . import errors, hello, pacing
from .ingress import IngressConnection

# Progress frames are disposable: past this many unsent frames for one client, older progress
# is dropped so a slow reader cannot make the server buffer without bound.
MAX_PENDING_PROGRESS = 8
# A client that does not read its replies is not read from either: past this many unsent frames the
# server stops taking its requests, so the replies to a flood of requests cannot pile up.
MAX_UNSENT = 64
# Frames up to this size are decoded on the event loop: msgpack reads them in well under a millisecond
# and they are most of what arrives. Larger frames, and the checks of every job request (its prompts
# are parsed), run on a reading thread, so no client's input holds up the others.
INLINE_FRAME = 64 * 1024

T = TypeVar("T")


class Services(Protocol):
    """What a connection uses of the server it belongs to."""

    config: ServerConfig
    registry: Registry
    generator: Generator
    queue: JobQueue
    trainer: Trainer | None  # None on a cluster
    readers: Executor  # the threads that decode large frames and check job requests

    def welcome(self) -> Welcome: ...


class Connection:
    def __init__(self, services: Services, websocket: IngressConnection, number: int):
        self.services = services
        self.websocket = websocket
        self.number = number
        self.greeted = False
        self.opened_at = time.monotonic()
        self.leaving = False  # cut off: told why, and closing
        self._close: tuple[int, str] = (1000, "")
        self._loop = asyncio.get_running_loop()
        self._outbox: deque[tuple[bool, bytes]] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._writer_gone = False
        self._live_seeds: dict[str, int] = {}
        self._preprocessing: asyncio.Task[None] | None = None
        websocket.on_refused = self._check_pace

    @property
    def waiting_for_hello(self) -> bool:
        return not self.greeted and not self.leaving

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        watch = asyncio.create_task(self._watch())
        try:
            async for frame in self.websocket:
                if self.leaving:
                    break  # cut off: nothing more it sent is served
                try:
                    await self._receive(frame)
                finally:
                    self.websocket.release(len(frame))
                if self._closing:
                    break
                await asyncio.sleep(0)  # the replies just made reach the outbox before its size is checked
                await self._drained.wait()
        except websockets.ConnectionClosed:
            pass
        finally:
            watch.cancel()
            self.services.queue.cancel_owner(self.number, "client disconnected")
            self.services.generator.sessions.forget(self.number)
            self._closing = True
            self._ready.set()
            await writer

    def cut(self, cut: pacing.Cut) -> None:
        """Tell the client why, then close the connection (whatever it is sending meanwhile)."""
        if self.leaving:
            return
        self.leaving = True
        self._close = (cut.code, cut.error.code)
        self._enqueue(False, codec.encode(cut.error))  # on the loop: queued before the writer can close
        self._closing = True

    async def _watch(self) -> None:
        config = self.services.config
        tick = min(1.0, config.hello_timeout / 4, config.receive_window / 4)
        while not self.leaving:
            await asyncio.sleep(tick)
            self._check_pace()

    def _check_pace(self) -> None:
        now = time.monotonic()
        found = pacing.check(self.services.config, self.websocket, self.greeted, now - self.opened_at, now)
        if found is not None:
            self.cut(found)

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
                    await self.websocket.close(*self._close)
                    return
        except websockets.ConnectionClosed:
            pass
        finally:
            self._writer_gone = True
            self._outbox.clear()
            self._drained.set()  # the reader must not wait on a writer that is gone

    async def _receive(self, frame: bytes | str) -> None:
        limits = self.services.config.limits
        try:
            if len(frame) <= INLINE_FRAME:
                message = codec.decode_client(frame, limits)
            else:
                message = await self._off_loop(codec.decode_client, frame, limits)
        except ProtocolError as exc:
            self.reply(errors.for_frame(exc))
            return
        try:
            await self._dispatch(message, len(frame))
        except Exception as exc:
            # Before the hello nothing a client sent is served, so no reply speaks of its request.
            request_id = getattr(message, "id", None) if self.greeted else None
            self.reply(errors.for_message(exc, request_id))

    async def _dispatch(self, message: Any, size: int) -> None:
        if isinstance(message, Hello):
            try:
                hello.check(message, self.services.config.token)
            except RequestError:
                self._closing = True  # once the client is told why
                raise
            self.greeted = True
            self.websocket.limit = None  # from now on the message size limit and the byte budgets apply
            self.reply(self.services.welcome())
        elif not self.greeted:
            raise Unauthorized("send 'hello' before anything else", "type")
        elif isinstance(message, ListModels):
            registry = self.services.registry
            await asyncio.to_thread(registry.scan)
            self.reply(ModelList(models=[e.info() for e in registry.entries()]))
        elif isinstance(message, Live):
            await self._live(message, size)
        elif isinstance(message, LiveStop):
            self._live_seeds.pop(message.session, None)
            self.services.queue.cancel_owner(self.number, "live stopped", session=message.session)
            self.reply(LiveStopped(session=message.session))
        elif isinstance(message, Generate):
            await self._generate(message, size)
        elif isinstance(message, Finalize):
            kept = self.services.generator.check_finalize(self.number, message.id)
            self.services.queue.submit(Job(request=kept.request, owner=self.number, reply=self.reply, size=size,
                                           finalize=True))
        elif isinstance(message, Preprocess):
            # Run beside the reading: a depth or pose model may take seconds on a CPU, and the client's
            # cancel or next frame must not wait behind it. One at a time holds at most one picture.
            if self._preprocessing is not None and not self._preprocessing.done():
                raise Busy("a preprocess of this connection is still running: wait for its result", "type")
            self._preprocessing = asyncio.create_task(self._preprocess(message))
        elif isinstance(message, Train):
            await self._train(message, size)
        elif isinstance(message, Cancel):
            if not self.services.queue.cancel(self.number, message.id):
                raise NotFound(f"no queued or running job {message.id!r}", "id")

    async def _preprocess(self, request: Preprocess) -> None:
        try:
            self.reply(await self._off_loop(self.services.generator.preprocess, request))
        except Exception as exc:
            self.reply(errors.for_message(exc, request.id))

    async def _generate(self, request: Generate, size: int, session: str | None = None) -> None:
        generator = self.services.generator
        await self._off_loop(generator.check, request)
        self.services.queue.submit(Job(request=request, owner=self.number, reply=self.reply, session=session,
                                       size=size, estimate_s=generator.estimate(request)))

    async def _train(self, request: Train, size: int) -> None:
        trainer = self.services.trainer
        if trainer is None:
            raise Unsupported("this server does not train: trainings run on a server without --cluster", "type")
        await self._off_loop(trainer.check, request)
        try:
            self.services.queue.submit(Job(request=request, owner=self.number, reply=self.reply, size=size,
                                           background=True))
        except Exception:
            await self._off_loop(trainer.forget, request)
            raise

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(self.services.readers, function, *args)

    async def _live(self, frame: Live, size: int) -> None:
        if frame.mode == "txt2img":
            raise BadInput("live frames refine the canvas: use mode 'img2img' or 'inpaint'", "mode")
        # One seed per session, so only the strokes change the picture from frame to frame.
        if frame.seed is None:
            frame.seed = self._live_seeds.setdefault(frame.session, secrets.randbelow(2**32))
        await self._generate(frame, size, session=frame.session)
