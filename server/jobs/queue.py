"""The job queue and its workers: one thread per worker (one device here, or each replica of a
cluster), each running one job at a time.

Background jobs (trainings) start only when no other job waits; one that runs is asked to pause when a
job arrives, steps aside between two of its steps (its run returns `Paused`) and waits, first of the
background jobs, until the queue has nothing else. A client leaving does not stop a training.

The asyncio loop submits and cancels jobs; which free worker starts a waiting job is routing.py's
rule, applied under the lock whenever a job arrives or a worker frees up. Every accepted job ends
with exactly one terminal message (result, cancelled or error), sent through the job's `reply`
callback, which the server makes thread-safe. A job whose worker is lost mid-job is run once more,
first in line, on another worker (its seed fixed by the worker, so the pixels are the same).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from shared.messages import Cancelled, Queued

from ..config import in_mib
from ..errors import BadInput, Busy, Unsupported, WorkerLost
from . import routing
from .job import STOPPING, Job, JobCancelledError, Paused
from .worker import Worker

log = logging.getLogger("underpaint.jobs")
# How long stopping waits for the running job to reach a check point. With the close timeout of the
# connections after it, a server stops well within the 10 s a service manager gives it.
STOP_WAIT = 5.0

# The terminal message of a job whose runner raised: what the client hears is the network side's
# to say (server/net/errors.py), so the queue is given it.
Failed = Callable[[Job, Exception], Any]
Ended = Callable[[Job, Any], None]  # told every accepted job's terminal message (the job log)
# Live sessions remembered with the worker they stick to; a client inventing session names cannot
# grow the table past this (the oldest are forgotten, and their next frame goes anywhere).
MAX_HOMES = 1024


class JobQueue:
    """FIFO of waiting jobs plus the jobs running now, shared by the loop and the worker threads."""

    def __init__(self, workers: Sequence[Worker], failed: Failed, *, max_per_owner: int = 32, max_total: int = 256,
                 bytes_per_owner: int | None = None, bytes_total: int | None = None, on_end: Ended | None = None):
        self._workers = list(workers)
        self._failed = failed
        self.on_end = on_end
        self._max_per_owner = max_per_owner
        self._max_total = max_total
        # What the inputs of queued and running jobs may hold, in bytes (None: no limit).
        self._bytes_per_owner = bytes_per_owner
        self._bytes_total = bytes_total
        self._waiting: deque[Job] = deque()
        self._running: dict[int, Job] = {}  # worker index -> the job it was given
        self._down: set[int] = set()  # workers lost mid-job, not yet back
        self._idle_since = [0.0] * len(self._workers)
        self._homes: OrderedDict[tuple[int, str], int] = OrderedDict()  # (owner, live session) -> worker
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(index,), name=f"underpaint-worker-{index}",
                                          daemon=True) for index in range(len(self._workers))]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Cancel everything and wait (bounded) for the workers to stop: each does at its next check point
        (models/interrupts.py). Should one still be inside one long operation after `timeout`, its job is
        ended here all the same, so its client hears `cancelled` now; the worker's own outcome is then
        never sent."""
        with self._lock:
            self._stopping.set()
            waiting, self._waiting = list(self._waiting), deque()
            for job in waiting:
                job.ended_at = time.monotonic()
                self._end(job, Cancelled(id=job.id, reason=STOPPING))
            for job in self._running.values():
                job.cancel(STOPPING)
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for running in self._running.values():
                if not running.ended:
                    log.warning("job %s is still inside one operation after %g s; ended without waiting for it",
                                running.id, timeout)
                    running.ended_at = time.monotonic()
                    self._end(running, Cancelled(id=running.id, reason=STOPPING))

    @property
    def worker_busy(self) -> bool:
        """Whether a worker thread is still running a job (after stop(): stuck inside one operation)."""
        with self._lock:
            return any(self._threads[index].is_alive() for index in self._running)

    # --- called from the event loop ----------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job and tell its owner its position; Busy or BadInput if it cannot be accepted.

        A live frame (job.session set) supersedes its session's waiting frame and takes over
        its place in the queue, and cancels the session's running frame unless that one is past
        half of its steps (so continuous painting still produces results). Each session thus
        holds at most one waiting slot, and normal jobs queued behind it are never starved.
        """
        with self._lock:
            if self._stopping.is_set():
                raise Busy("the server is shutting down")
            if any(j.owner == job.owner and j.id == job.id for j in self._active()):
                raise BadInput(f"a job with id {job.id!r} is already queued or running", "id")
            if not any(worker.has(job.request.model) for worker in self._workers):
                raise Unsupported(f"no replica of this cluster can run {job.request.model!r}: its file differs from "
                                  "the front end's on every machine, or is missing there", "model")
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
            for running in self._running.values():
                if running.same_session(job) and not running.past_half:
                    running.cancel("superseded")
            self._dispatch()
            started = job not in self._waiting
            position = 0 if started else self._waiting.index(job) + len(self._running)
            job.reply(Queued(id=job.id, position=position, estimate_s=job.estimate_s))

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
                    if job.background:
                        # Its run ends it, saving what it has learnt: it goes first.
                        job.cancel(reason)
                        self._waiting.remove(job)
                        self._waiting.appendleft(job)
                        self._dispatch()
                        return True
                    self._waiting.remove(job)
                    job.ended_at = time.monotonic()
                    self._end(job, Cancelled(id=job.id, reason=reason))
                    return True
            for running in self._running.values():
                if running.owner == owner and running.id == job_id:
                    running.cancel(reason)
                    return True
        return False

    def cancel_owner(self, owner: int, reason: str, session: str | None = None) -> None:
        """Drop the waiting jobs of `owner` (of one live session, if given) and stop its running ones:
        the connection went away, or the session ended."""

        def matches(job: Job) -> bool:
            return job.owner == owner and not job.background and (session is None or job.session == session)

        with self._lock:
            for job in [j for j in self._waiting if matches(j)]:
                self._waiting.remove(job)
                job.ended_at = time.monotonic()
                self._end(job, Cancelled(id=job.id, reason=reason))
            for running in self._running.values():
                if matches(running):
                    running.cancel(reason)
            for key in [k for k in self._homes if k[0] == owner and session in (None, k[1])]:
                del self._homes[key]

    def running(self) -> dict[str, str]:
        """The id of each running job -> the name of the worker running it."""
        with self._lock:
            return {job.id: self._workers[index].name for index, job in self._running.items()}

    def _active(self) -> list[Job]:
        return list(self._running.values()) + list(self._waiting)

    # --- routing, under the lock --------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start what can start: each waiting job, in order (background jobs after the others, unless
        cancelled: they end at once), on the free worker routing.py picks; running background jobs are
        asked to step aside while another job waits."""
        for job in sorted(self._waiting, key=lambda j: j.background and not j.cancelled):
            if len(self._running) + len(self._down) >= len(self._workers):
                break
            index = routing.choose(job.request.model, self._home(job), self._candidates(job.request.model))
            if index is None:
                continue
            self._waiting.remove(job)
            job.started_at = time.monotonic()
            job.worker = self._workers[index].name
            self._running[index] = job
            if job.session is not None:
                self._homes[(job.owner, job.session)] = index
                self._homes.move_to_end((job.owner, job.session))
                while len(self._homes) > MAX_HOMES:
                    self._homes.popitem(last=False)
        if any(not j.background for j in self._waiting):
            for running in self._running.values():
                if running.background:
                    running.pause.set()
        self._lock.notify_all()

    def _home(self, job: Job) -> int | None:
        return self._homes.get((job.owner, job.session)) if job.session is not None else None

    def _candidates(self, model: str) -> list[routing.Candidate]:
        return [routing.Candidate(index=index, free=index not in self._running, loaded=worker.loaded(),
                                  idle_since=self._idle_since[index])
                for index, worker in enumerate(self._workers) if index not in self._down and worker.has(model)]

    # --- the worker threads --------------------------------------------------------------------------

    def _take(self, index: int) -> Job | None:
        with self._lock:
            while index not in self._running and not self._stopping.is_set():
                self._lock.wait()
            return self._running.get(index)

    def _work(self, index: int) -> None:
        worker = self._workers[index]
        while (job := self._take(index)) is not None:
            message: Any = None
            lost = False
            try:
                message = self._run(worker, job)
            except WorkerLost as exc:
                lost = True
                message = self._lost(job, exc)
            finally:
                # Under the lock: a cancel that finds the job gone is answered after its terminal message.
                with self._lock:
                    del self._running[index]
                    self._idle_since[index] = time.monotonic()
                    if lost:
                        self._down.add(index)
                    if isinstance(message, Paused):
                        job.pause.clear()
                        self._requeue_background(job)
                    elif message is not None:
                        job.ended_at = time.monotonic()
                        self._end(job, message)
                    elif lost and not self._stopping.is_set():
                        self._waiting.appendleft(job)
                    self._dispatch()
            if lost:
                back = worker.recover(self._stopping)
                with self._lock:
                    if back:
                        log.info("worker %d (%s) is back", index, worker.device)
                        self._down.discard(index)
                    self._dispatch()

    def _requeue_background(self, job: Job) -> None:
        """A paused background job waits before the other background jobs, behind every other job."""
        if self._stopping.is_set():
            job.ended_at = time.monotonic()
            self._end(job, Cancelled(id=job.id, reason=STOPPING))
            return
        first = next((i for i, j in enumerate(self._waiting) if j.background), len(self._waiting))
        self._waiting.insert(first, job)

    def _lost(self, job: Job, exc: WorkerLost) -> Any:
        """What a job whose worker was lost ends with: None to run it again, first in line."""
        if job.cancelled:
            return Cancelled(id=job.id, reason=job.cancel_reason)
        if self._stopping.is_set():
            return Cancelled(id=job.id, reason=STOPPING)
        if job.attempts < 2:
            log.warning("job %s: its worker was lost mid-job; running it again", job.id)
            return None
        return self._failed(job, exc)

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

    def _run(self, worker: Worker, job: Job) -> Any:
        job.attempts += 1
        try:
            if job.cancelled and not job.background:
                raise JobCancelledError
            message = worker.run(job)
            # A cancel that arrives while the last step finishes still wins: the client was told
            # nothing else, and the image is already on disk. A background job ends its own cancel.
            if job.cancelled and not job.background:
                raise JobCancelledError
            return message
        except JobCancelledError:
            return Cancelled(id=job.id, reason=job.cancel_reason)
        except WorkerLost:
            raise
        except Exception as exc:
            return self._failed(job, exc)
