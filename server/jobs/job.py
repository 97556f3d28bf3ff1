"""A job: one accepted `generate`, `live`, `finalize` or `train` request, from the queue to its terminal
message.

A training is a background job: it runs while no other job waits, and steps aside between two of its
optimizer steps when one arrives (`pause`), keeping what it has learnt in `state` until it runs again.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.messages import Generate
from shared.training import Train

Reply = Callable[[Any], None]


# The cancel reason of every job when the server stops: a training keeps its checkpoint for the next start.
STOPPING = "server stopping"


class Paused:
    """What a background job's run returns when it stepped aside for a waiting job: it runs again later."""


class JobCancelledError(Exception):
    """Raised inside a running job (from its step callback) to stop it."""


@dataclass(eq=False)
class Job:
    request: Generate | Train
    owner: int  # the connection that sent it
    reply: Reply
    session: str | None = None  # live session, if a live frame
    # A `finalize`: `request` is the kept live frame's, decoded again at full quality (no session: live
    # frames neither supersede it nor are superseded by it).
    finalize: bool = False
    size: int = 0  # bytes of the request as it arrived: what its inputs hold while it is queued or running
    estimate_s: float | None = None  # how long its denoising should take (Generator.estimate)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    ended_at: float | None = None
    ended: bool = False  # its terminal message has been sent (JobQueue._end)
    step: int = 0  # denoising steps done, set by the running job
    total: int = 0
    serial: int = field(default_factory=itertools.count().__next__)
    attempts: int = 0  # runs started: a job whose worker was lost is run once more
    worker: str | None = None  # the name of the worker it was given last
    # Told of a cancel at once, on the caller's thread, while a worker elsewhere runs the job: it must
    # not block (a cluster replica is told over the network, in the background).
    on_cancel: Callable[[], None] | None = None
    background: bool = False  # a training: runs in the gaps between other jobs
    pause: threading.Event = field(default_factory=threading.Event)  # set: step aside at the next step
    state: Any = None  # what a background job keeps in memory between its runs

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def same_session(self, other: Job) -> bool:
        return self.session is not None and (self.owner, self.session) == (other.owner, other.session)

    @property
    def past_half(self) -> bool:
        return self.total > 0 and self.step * 2 > self.total

    def raise_if_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelledError

    def cancel(self, reason: str | None = None) -> None:
        if not self.cancel_event.is_set():
            self.cancel_reason = reason
            self.cancel_event.set()
            if self.on_cancel is not None:
                self.on_cancel()
