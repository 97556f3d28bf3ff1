"""Which worker runs a job (server/jobs/routing.py), and the queue with several workers: jobs spread,
a live session stays on its worker, a job whose worker is lost runs once more elsewhere or ends with
an error, and every job gets exactly one terminal message. The workers here run in this process and
take a job when the test lets them; the same queue drives a cluster's replicas (test_cluster.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection

import pytest

from server.errors import WorkerLost
from server.jobs import routing
from server.jobs.job import Job
from server.jobs.queue import JobQueue
from server.net import errors
from shared.messages import Cancelled, Error, Generate, Queued, Result
from testing.serving import wait_until

C = routing.Candidate

ROUTES = [
    # what, model, home, candidates, chosen
    ("the free one with the model loaded", "a", None, [C(0, True, ["b"], 0), C(1, True, ["a"], 5)], 1),
    ("loaded but busy: the free one", "a", None, [C(0, False, ["a"], 0), C(1, True, ["b"], 0)], 1),
    ("nothing loaded beats another model", "a", None, [C(0, True, ["b"], 0), C(1, True, [], 9)], 1),
    ("same state: idle the longest", "a", None, [C(0, True, [], 7), C(1, True, [], 3)], 1),
    ("all busy: wait", "a", None, [C(0, False, [], 0), C(1, False, ["a"], 0)], None),
    ("no candidate: wait", "a", None, [], None),
    ("a session's home when free", "a", 0, [C(0, True, ["b"], 0), C(1, True, ["a"], 0)], 0),
    ("a session waits for its busy home", "a", 0, [C(0, False, ["a"], 0), C(1, True, ["a"], 0)], None),
    ("a home that is down or lacks the model: anywhere", "a", 2, [C(0, True, [], 0), C(1, True, ["a"], 0)], 1),
]


@pytest.mark.parametrize(("what", "model", "home", "candidates", "chosen"), ROUTES, ids=[r[0] for r in ROUTES])
def test_routing(what: str, model: str, home: int | None, candidates: list[routing.Candidate],
                 chosen: int | None) -> None:
    assert routing.choose(model, home, candidates) == chosen


class HeldWorker:
    """Runs a job when the test releases it: the outcome is the next one given (a Result, or an
    exception to raise). Its loaded model is the last it ran."""

    def __init__(self, name: str, models: Collection[str] = ("a", "b")):
        self.name = name
        self.models = set(models)
        self.ran: list[str] = []
        self.outcomes: list[object] = []
        self.go = threading.Semaphore(0)
        self.last: list[str] = []
        self.recovered = threading.Event()

    @property
    def device(self) -> str:
        return self.name

    def loaded(self) -> Collection[str]:
        return self.last

    def has(self, model: str) -> bool:
        return model in self.models

    def run(self, job: Job) -> Result:
        self.ran.append(job.id)
        self.go.acquire()
        self.last = [job.request.model]
        outcome = self.outcomes.pop(0) if self.outcomes else Result(id=job.id, images=[], info={}, elapsed=0.0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def recover(self, stopping: threading.Event) -> bool:
        self.recovered.set()
        return True


class Replies:
    def __init__(self) -> None:
        self.messages: list[object] = []

    def __call__(self, message: object) -> None:
        self.messages.append(message)

    def terminal(self, job_id: str) -> list[object]:
        return [m for m in self.messages if isinstance(m, Result | Cancelled | Error) and m.id == job_id]

    def position(self, job_id: str) -> int:
        return next(m.position for m in self.messages if isinstance(m, Queued) and m.id == job_id)


@pytest.fixture
def two():
    workers = [HeldWorker("w0"), HeldWorker("w1")]
    queue = JobQueue(workers, errors.for_job)
    queue.start()
    yield workers, queue
    for worker in workers:
        worker.go.release(100)
    queue.stop()


def job(replies: Replies, job_id: str, model: str = "a", owner: int = 1, session: str | None = None) -> Job:
    return Job(request=Generate(id=job_id, mode="txt2img", model=model), owner=owner, reply=replies, session=session)


def test_jobs_spread_over_free_workers_and_wait_when_all_are_busy(two) -> None:
    workers, queue = two
    replies = Replies()
    for name in ("j1", "j2", "j3"):
        queue.submit(job(replies, name))
    wait_until(lambda: workers[0].ran and workers[1].ran, what="both workers busy")
    assert [replies.position(n) for n in ("j1", "j2", "j3")] == [0, 0, 2]
    workers[0].go.release()
    wait_until(lambda: len(workers[0].ran) == 2, what="j3 on the worker that freed up")
    assert workers[0].ran == ["j1", "j3"] and workers[1].ran == ["j2"]


def test_the_next_job_for_a_model_goes_where_it_is_loaded(two) -> None:
    workers, queue = two
    replies = Replies()
    for name, model in (("a1", "a"), ("b1", "b")):
        queue.submit(job(replies, name, model))
        wait_until(lambda n=name: n in workers[0].ran + workers[1].ran, what=name)
        next(w for w in workers if n_in(w, name)).go.release()
        wait_until(lambda n=name: replies.terminal(n), what=f"{name} done")
    queue.submit(job(replies, "a2", "a"))
    wait_until(lambda: "a2" in workers[0].ran + workers[1].ran, what="a2 started")
    assert n_in(next(w for w in workers if n_in(w, "a1")), "a2")


def n_in(worker: HeldWorker, job_id: str) -> bool:
    return job_id in worker.ran


def test_a_live_session_waits_for_its_busy_worker_rather_than_take_a_free_one(two) -> None:
    workers, queue = two
    replies = Replies()
    queue.submit(job(replies, "f1", session="s"))
    wait_until(lambda: workers[0].ran, what="f1 started")
    workers[0].go.release()
    wait_until(lambda: replies.terminal("f1"), what="f1 done")
    queue.submit(job(replies, "other"))  # its model is loaded on w0: it goes there
    wait_until(lambda: n_in(workers[0], "other"), what="other on w0")
    queue.submit(job(replies, "f2", session="s"))
    time.sleep(0.2)
    assert workers[1].ran == [] and replies.position("f2") == 1
    workers[0].go.release()
    wait_until(lambda: n_in(workers[0], "f2"), what="f2 on the session's worker")


def test_a_job_whose_worker_is_lost_runs_again_on_the_other(two) -> None:
    workers, queue = two
    replies = Replies()
    workers[0].outcomes.append(WorkerLost("gone"))
    queue.submit(job(replies, "j"))
    wait_until(lambda: workers[0].ran, what="j started")
    workers[0].go.release()
    wait_until(lambda: workers[1].ran, what="j run again")
    workers[1].go.release()
    wait_until(lambda: replies.terminal("j"), what="j done")
    assert workers[1].ran == ["j"] and workers[0].recovered.is_set()
    time.sleep(0.1)
    assert [type(m) for m in replies.terminal("j")] == [Result]


def test_a_job_lost_twice_ends_with_one_coded_error(two) -> None:
    workers, queue = two
    replies = Replies()
    for worker in workers:
        worker.outcomes.append(WorkerLost("the machine running this job stopped"))
    queue.submit(job(replies, "j"))
    for worker in workers:
        worker.go.release()
    wait_until(lambda: replies.terminal("j"), what="j ended")
    time.sleep(0.1)
    (ended,) = replies.terminal("j")
    assert isinstance(ended, Error) and ended.code == "internal" and "stopped" in ended.message


def test_a_model_no_worker_has_is_refused_at_once() -> None:
    queue = JobQueue([HeldWorker("w0", models=["a"])], errors.for_job)
    with pytest.raises(Exception, match="no replica of this cluster can run 'b'"):
        queue.submit(job(Replies(), "j", model="b"))
