"""A job: one accepted `generate` or `live` request, from the queue to its terminal message."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.messages import Generate

Reply = Callable[[Any], None]


class JobCancelledError(Exception):
    """Raised inside a running job (from its step callback) to stop it."""


@dataclass(eq=False)
class Job:
    request: Generate
    owner: int  # the connection that sent it
    reply: Reply
    session: str | None = None  # live session, if a live frame
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
