"""Many clients at once: each sends a mix of jobs and cancels; every job must be accounted for.

Each client checks what it saw against the protocol: every job it sent was either refused at once
(one `error`, e.g. `busy`) or queued and then ended with exactly one terminal message (`result`,
`cancelled` or `error`); no message came for a job it did not send, nothing came for a job after
its end, and no job was queued twice. The server's job log must hold exactly one line per queued
job. Queue-to-start latency (p50 / p99) comes from the job log's `wait_s`.

`python -m bench.load` runs 20 clients x 25 jobs against a real server process, twice: all jobs
at once ("burst") and at most two unfinished per client ("paced"); then one client with one job
at a time ("solo", the server's own dispatch time); it writes
bench/results/load.json; tests/test_load.py runs a smaller round against an in-process server
and also checks every queue position the server told.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import result_path, write_report
from shared.client import Client
from shared.messages import Cancel, Cancelled, Error, Generate, Progress, Queued, Result

TERMINAL = (Result, Cancelled, Error)


@dataclass
class ClientRun:
    """What one client sent and received."""

    name: str
    sent: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)
    seconds: float = 0.0

    def positions(self) -> dict[str, int]:
        return {m.id: m.position for m in self.received if isinstance(m, Queued)}

    def violations(self) -> list[str]:
        """Everything this client saw that breaks the protocol's promises."""
        problems = []
        mine = set(self.sent)
        state: dict[str, str] = dict.fromkeys(self.sent, "sent")
        for message in self.received:
            job = getattr(message, "id", None)
            if job not in mine:
                problems.append(f"{self.name}: {message.TYPE} for a job it did not send: {job!r}")
                continue
            if isinstance(message, Error) and (message.code, message.field) == ("not_found", "id"):
                if job not in self.cancels:
                    problems.append(f"{self.name}: not_found for {job}, which it never cancelled")
                continue  # the answer to a cancel that came too late, not the job's end
            now = state[job]
            if isinstance(message, Queued):
                state[job] = "queued" if now == "sent" else "bad"
            elif isinstance(message, Progress):
                state[job] = now if now == "queued" else "bad"
            elif isinstance(message, Error) and now == "sent":
                state[job] = "refused"
            elif isinstance(message, TERMINAL):
                state[job] = "ended" if now == "queued" else "bad"
            if state[job] == "bad":
                problems.append(f"{self.name}: {message.TYPE} for {job} after it was {now}")
        problems += [f"{self.name}: {job} was left {s}" for job, s in state.items() if s in ("sent", "queued")]
        return problems

    def outcomes(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        queued = set(self.positions())
        for message in self.received:
            if isinstance(message, Error) and message.code == "not_found":
                counts["late cancel (not_found)"] += 1
            elif isinstance(message, Error) and message.id not in queued:
                counts[f"refused ({message.code})"] += 1
            elif isinstance(message, TERMINAL):
                counts[message.TYPE if not isinstance(message, Error) else f"error ({message.code})"] += 1
        return counts


def job_request(job_id: str, rng: random.Random, model: str) -> Generate:
    return Generate(id=job_id, mode="txt2img", model=model, prompt="a red circle on blue", width=64, height=64,
                    steps=rng.choice((1, 2)), seed=rng.randrange(2**32), scheduler="euler")


def run_client(url: str, index: int, jobs: int, cancel_rate: float, seed: int, model: str,
               in_flight: int | None = None, start: threading.Barrier | None = None,
               timeout: float = 900) -> ClientRun:
    """One client: sends `jobs` jobs with small random pauses (with at most `in_flight` unfinished at
    a time, if given), cancelling a random earlier one now and then (finished or not), then reads
    until every job is settled."""
    rng = random.Random(seed * 1000 + index)
    run = ClientRun(name=f"load-{index}")
    with Client(url, name=run.name) as client:
        if start is not None:
            start.wait()
        began = time.monotonic()
        deadline = began + timeout
        for n in range(jobs):
            while in_flight is not None and len(run.sent) - len(_settled(run)) >= in_flight:
                run.received.append(client.receive(timeout=max(0.1, deadline - time.monotonic())))
            job_id = f"{index}-{n}-{rng.randrange(16**6):06x}"
            client.send(job_request(job_id, rng, model))
            run.sent.append(job_id)
            if rng.random() < cancel_rate:
                victim = rng.choice(run.sent)
                client.send(Cancel(id=victim))
                run.cancels.append(victim)
            time.sleep(rng.uniform(0, 0.02))
        while len(_settled(run)) < len(run.sent):
            run.received.append(client.receive(timeout=max(0.1, deadline - time.monotonic())))
        run.seconds = time.monotonic() - began
    return run


def _settled(run: ClientRun) -> set[str]:
    """The jobs that ended, or were refused (an `error` before any `queued`)."""
    return {m.id for m in run.received
            if isinstance(m, TERMINAL) and not (isinstance(m, Error) and m.code == "not_found")}


def run_load(url: str, clients: int = 20, jobs: int = 25, cancel_rate: float = 0.2, seed: int = 1,
             model: str = "tiny-sd15", in_flight: int | None = None) -> list[ClientRun]:
    """`clients` clients at once, started together."""
    start = threading.Barrier(clients)
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(run_client, url, i, jobs, cancel_rate, seed, model, in_flight, start)
                   for i in range(clients)]
        return [f.result() for f in futures]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarise(runs: list[ClientRun], log: list[dict[str, Any]]) -> dict[str, Any]:
    """Client-side invariants and the server log's view of the same jobs."""
    violations = [v for run in runs for v in run.violations()]
    told = {job: position for run in runs for job, position in run.positions().items()}
    logged = Counter(line["id"] for line in log)
    violations += [f"job {job} has {logged[job]} log lines" for job in told if logged[job] != 1]
    violations += [f"log line for {job}, which no client saw queued" for job in set(logged) - set(told)]
    waits = [line["wait_s"] for line in log if line["wait_s"] is not None]
    # Jobs that found the queue empty: their wait is the server's own dispatch time.
    dispatch = [line["wait_s"] for line in log if line["wait_s"] is not None and told.get(line["id"]) == 0]
    runs_s = [line["run_s"] for line in log if line["outcome"] == "result"]
    outcomes: Counter[str] = Counter()
    for run in runs:
        outcomes.update(run.outcomes())
    wall = max(run.seconds for run in runs)
    return {
        "clients": len(runs),
        "jobs_sent": sum(len(run.sent) for run in runs),
        "cancels_sent": sum(len(run.cancels) for run in runs),
        "jobs_queued": len(told),
        "outcomes": dict(outcomes.most_common()),
        "violations": len(violations),
        "first_violations": violations[:10],
        "queue_position_at_submit": {"mean": _round(statistics.fmean(told.values())) if told else None,
                                     "max": max(told.values(), default=None)},
        "queue_to_start_s": _spread(waits),
        "dispatch_s (queue was empty)": _spread(dispatch),
        "run_s": _spread(runs_s),
        "wall_s": round(wall, 1),
        "results_per_s": round(outcomes["result"] / wall, 2) if wall else None,
    }


def _spread(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": _round(percentile(values, 50)), "p99": _round(percentile(values, 99)),
            "max": _round(max(values, default=None))}


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


@dataclass
class Scenario:
    clients: int | None  # None: --clients
    jobs: int | None  # per client; None: --jobs
    in_flight: int | None  # most unfinished jobs per client; None: no limit
    cancels: bool


SCENARIOS = {
    # Every client sends all its jobs at once: queues fill, the global cap answers `busy`.
    "burst": Scenario(None, None, None, True),
    # Every client keeps at most two jobs unfinished, as an artist waiting for results does.
    "paced": Scenario(None, None, 2, True),
    # One client, one job at a time: the queue is empty at each submit, so the wait is the server's own.
    "solo": Scenario(1, 100, 1, False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=25, help="jobs per client")
    parser.add_argument("--cancel-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=result_path("load"))
    args = parser.parse_args(argv)

    from testing.processes import ServerProcess

    report: dict[str, Any] = {"settings": {
        "clients": args.clients, "jobs_per_client": args.jobs, "cancel_rate": args.cancel_rate,
        "model": "tiny-sd15 (random weights)", "size": "64x64", "steps": "1-2", "scheduler": "euler",
        "seed": args.seed, "server": "one process, 1 torch thread, default caps (32 per connection, 256 in all)"}}
    for name, scenario in SCENARIOS.items():
        with ServerProcess(threads=1) as server:
            # Load the model first, so the first jobs' latency is not the model load.
            with Client(server.url) as warm:
                warm.generate(job_request("warm-up", random.Random(0), "tiny-sd15"))
            runs = run_load(server.url, scenario.clients or args.clients, scenario.jobs or args.jobs,
                            args.cancel_rate if scenario.cancels else 0.0, args.seed, in_flight=scenario.in_flight)
            log = [line for line in server.job_lines() if line["id"] != "warm-up"]
        report[name] = {"max_unfinished_per_client": scenario.in_flight, **summarise(runs, log)}
        print(name, json.dumps(report[name], indent=2), file=sys.stderr)
    write_report(report, args.out)
    return 1 if any(report[name]["violations"] for name in SCENARIOS) else 0


if __name__ == "__main__":
    sys.exit(main())
