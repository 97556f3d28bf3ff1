"""The job queue and the one inference worker thread.

The asyncio loop submits and cancels jobs; the worker thread runs them one at a time. Every
accepted job ends with exactly one terminal message (result, cancelled or error), sent
through the job's `reply` callback, which the server makes thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from shared.messages import Cancelled, Queued

from ..config import in_mib
from ..errors import BadInput, Busy
from .job import Job, JobCancelledError

log = logging.getLogger("underpaint.jobs")
# How long stopping waits for the running job to reach a check point. With the close timeout of the
# connections after it, a server stops well within the 10 s a service manager gives it.
STOP_WAIT = 5.0

Runner = Callable[[Job], Any]  # returns the result message, raises to fail
# The terminal message of a job whose runner raised: what the client hears is the network side's
# to say (server/net/errors.py), so the queue is given it.
Failed = Callable[[Job, Exception], Any]
Ended = Callable[[Job, Any], None]  # told every accepted job's terminal message (the job log)


class JobQueue:
    """FIFO of waiting jobs plus the job running now, shared by the loop and the worker."""

    def __init__(self, runner: Runner, failed: Failed, *, max_per_owner: int = 32, max_total: int = 256,
                 bytes_per_owner: int | None = None, bytes_total: int | None = None, on_end: Ended | None = None):
        self._runner = runner
        self._failed = failed
        self.on_end = on_end
        self._max_per_owner = max_per_owner
        self._max_total = max_total
        # What the inputs of queued and running jobs may hold, in bytes (None: no limit).
        self._bytes_per_owner = bytes_per_owner
        self._bytes_total = bytes_total
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="underpaint-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Cancel everything and wait (bounded) for the worker to stop: it does at its next check point
        (models/interrupts.py). Should it still be inside one long operation after `timeout`, its job is
        ended here all the same, so its client hears `cancelled` now; the worker's own outcome is then
        never sent."""
        with self._lock:
            self._stopping = True
            waiting, self._waiting = list(self._waiting), deque()
            for job in waiting:
                job.ended_at = time.monotonic()
                self._end(job, Cancelled(id=job.id, reason="server stopping"))
            if self._running is not None:
                self._running.cancel("server stopping")
            self._lock.notify_all()
        self._thread.join(timeout)
        with self._lock:
            running = self._running
            if running is not None and not running.ended:
                log.warning("job %s is still inside one operation after %g s; ended without waiting for it",
                            running.id, timeout)
                running.ended_at = time.monotonic()
                self._end(running, Cancelled(id=running.id, reason="server stopping"))

    @property
    def worker_busy(self) -> bool:
        """Whether the worker thread is still running a job (after stop(): stuck inside one operation)."""
        return self._thread.is_alive() and self._running is not None

    # --- called from the event loop ----------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job and tell its owner its position; Busy or BadInput if it cannot be accepted.

        A live frame (job.session set) supersedes its session's waiting frame and takes over
        its place in the queue, and cancels the session's running frame unless that one is past
        half of its steps (so continuous painting still produces results). Each session thus
        holds at most one waiting slot, and normal jobs queued behind it are never starved.
        """
        with self._lock:
            if self._stopping:
                raise Busy("the server is shutting down")
            if any(j.owner == job.owner and j.id == job.id for j in self._active()):
                raise BadInput(f"a job with id {job.id!r} is already queued or running", "id")
            superseded = next((j for j in self._waiting if j.same_session(job)), None)
            self._check_bytes(job, superseded)
            # Stamped under the lock, so waits and positions can be checked against each other exactly.
            job.queued_at = time.monotonic()
            if superseded is not None:
                self._waiting[self._waiting.index(superseded)] = job
                superseded.ended_at = job.queued_at
                self._end(superseded, Cancelled(id=superseded.id, reason="superseded"))
            else:
                self._check_capacity(job)
                self._waiting.append(job)
            running = self._running
            if running is not None and running.same_session(job) and not running.past_half:
                running.cancel("superseded")
            position = self._waiting.index(job) + (self._running is not None)
            job.reply(Queued(id=job.id, position=position, estimate_s=job.estimate_s))
            self._lock.notify_all()

    def _check_capacity(self, job: Job) -> None:
        mine = sum(1 for j in self._active() if j.owner == job.owner)
        if mine >= self._max_per_owner:
            raise Busy(f"this connection already has {mine} jobs waiting; wait for some to finish")
        if len(self._waiting) >= self._max_total:
            raise Busy("the server's queue is full; try again shortly")

    def _check_bytes(self, job: Job, superseded: Job | None) -> None:
        staying = [j for j in self._active() if j is not superseded]
        mine = sum(j.size for j in staying if j.owner == job.owner) + job.size
        if self._bytes_per_owner is not None and mine > self._bytes_per_owner:
            raise Busy(f"this connection's jobs would hold {in_mib(mine)} of images and prompts, more than its "
                       f"budget of {in_mib(self._bytes_per_owner)} (--connection-queue-budget); wait for some "
                       "to finish")
        total = sum(j.size for j in staying) + job.size
        if self._bytes_total is not None and total > self._bytes_total:
            raise Busy(f"the server's jobs would hold {in_mib(total)} of images and prompts, more than its "
                       f"budget of {in_mib(self._bytes_total)} (--queue-budget); try again shortly")

    def cancel(self, owner: int, job_id: str, reason: str | None = None) -> bool:
        """Cancel one job of `owner`; False if it has no such queued or running job."""
        with self._lock:
            for job in self._waiting:
                if job.owner == owner and job.id == job_id:
                    self._waiting.remove(job)
                    job.ended_at = time.monotonic()
                    self._end(job, Cancelled(id=job.id, reason=reason))
                    return True
            running = self._running
            if running is not None and running.owner == owner and running.id == job_id:
                running.cancel(reason)
                return True
        return False

    def cancel_owner(self, owner: int, reason: str, session: str | None = None) -> None:
        """Drop the waiting jobs of `owner` (of one live session, if given) and stop its running one:
        the connection went away, or the session ended."""

        def matches(job: Job) -> bool:
            return job.owner == owner and (session is None or job.session == session)

        with self._lock:
            for job in [j for j in self._waiting if matches(j)]:
                self._waiting.remove(job)
                job.ended_at = time.monotonic()
                self._end(job, Cancelled(id=job.id, reason=reason))
            if self._running is not None and matches(self._running):
                self._running.cancel(reason)

    def _active(self) -> list[Job]:
        return ([self._running] if self._running is not None else []) + list(self._waiting)

    # --- the worker thread ---------------------------------------------------------------------

    def _take(self) -> Job | None:
        with self._lock:
            while not self._waiting and not self._stopping:
                self._lock.wait()
            if self._stopping:
                return None
            job = self._waiting.popleft()
            job.started_at = time.monotonic()
            self._running = job
            return job

    def _work(self) -> None:
        while (job := self._take()) is not None:
            message: Any = None
            try:
                message = self._run(job)
            finally:
                # Under the lock: a cancel that finds the job gone is answered after its terminal message.
                with self._lock:
                    self._running = None
                    job.ended_at = time.monotonic()
                    if message is not None:
                        self._end(job, message)

    def _end(self, job: Job, message: Any) -> None:
        """The one place a job's terminal message leaves the queue: recorded, then sent; once per job."""
        if job.ended:
            return
        job.ended = True
        if self.on_end is not None:
            try:
                self.on_end(job, message)
            except Exception:
                log.exception("recording the end of job %s failed", job.id)
        job.reply(message)

    def _run(self, job: Job) -> Any:
        try:
            if job.cancelled:
                raise JobCancelledError
            message = self._runner(job)
            # A cancel that arrives while the last step finishes still wins: the client was told
            # nothing else, and the image is already on disk.
            if job.cancelled:
                raise JobCancelledError
            return message
        except JobCancelledError:
            return Cancelled(id=job.id, reason=job.cancel_reason)
        except Exception as exc:
            return self._failed(job, exc)
