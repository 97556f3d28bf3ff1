"""What a cluster gives and costs, on this machine, in one run (docs/cluster.md):

  (a) throughput: a batch of independent small jobs from two clients on two CPU replicas of one thread
      each (`--cluster auto --replicas 2 --replica-threads 1`) vs one server using the same two
      threads, and vs one server with one thread;
  (b) front-end overhead per job: one job at a time through the cluster vs a server on this machine
      with one thread, as much as a replica has: what each adds to the job's own time (the result's
      `elapsed`, measured where it ran), as a share of the job (target: at most 5 % more).

The servers on this machine run as processes of their own (`underpaint serve`, OMP_NUM_THREADS set),
as the replicas do: a server in the benchmark's own process would share its interpreter with the
clients.
  (c) cancel: the time from `cancel` to `cancelled` for a running job, through the cluster and on one
      machine;
  (d) a replica killed mid-job: the time from the kill to the re-run result, beside a job's own time,
      and until the replica is back.

Run: python -m bench.cluster → bench/results/cluster.json
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.report import write_report
from server.config import ServerConfig
from shared.client import Client
from shared.messages import Cancel, Cancelled, Progress, Result
from testing.processes import ServerProcess, tiny_models
from testing.serving import running_server, tiny_request, url

BATCH = 8  # jobs, from two clients
SMALL = {"width": 128, "height": 128, "steps": 12}
SINGLE = {"width": 192, "height": 192, "steps": 16}
REPEATS = 5


def batch_seconds(address: str, workers: int) -> float:
    """Wall time for BATCH jobs sent by two clients at once, each sending its half without waiting."""

    def client_half(offset: int) -> None:
        with Client(address, name=f"bench-{offset}") as client:
            requests = [tiny_request(seed=offset + i, **SMALL) for i in range(0, BATCH, 2)]
            for request in requests:
                client.send(request)
            pending = {request.id for request in requests}
            for message in client.messages(timeout=600):
                if isinstance(message, Result):
                    pending.discard(message.id)
                    if not pending:
                        return

    with Client(address, name="warm") as client:  # the model loaded on every worker
        for _ in range(workers):
            client.generate(tiny_request(**SMALL), timeout=600)
    started = time.perf_counter()
    threads = [threading.Thread(target=client_half, args=(offset,)) for offset in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def single_seconds(address: str) -> list[tuple[float, float]]:
    """One job at a time: (the time the client waited, the time the job itself took where it ran)."""
    times = []
    with Client(address, name="bench") as client:
        client.generate(tiny_request(**SINGLE), timeout=600)
        for index in range(REPEATS):
            started = time.perf_counter()
            result = client.generate(tiny_request(seed=index, **SINGLE), timeout=600)
            times.append((time.perf_counter() - started, result.elapsed))
    return times


def cancel_seconds(address: str) -> float:
    """Median time from `cancel`, sent at a job's second step, to its `cancelled`."""
    times = []
    with Client(address, name="bench") as client:
        for index in range(REPEATS):
            request = tiny_request(seed=index, width=256, height=256, steps=150)
            client.send(request)
            for message in client.messages(timeout=600):
                if isinstance(message, Progress) and message.step == 2:
                    client.send(Cancel(id=request.id))
                    asked = time.perf_counter()
                if isinstance(message, Cancelled):
                    times.append(time.perf_counter() - asked)
                    break
    return statistics.median(times)


def rerun_seconds(server) -> dict:
    """Kill the replica running a job at its first progress; time until its result comes from the other."""
    request = tiny_request(**SINGLE)
    with Client(url(server), name="bench") as client:
        client.send(request)
        killed = None
        for message in client.messages(timeout=600):
            if isinstance(message, Progress) and killed is None:
                victim = next(w for w in server.workers if w.name == server.queue.running()[request.id])
                pid = victim.info.pid
                os.kill(pid, signal.SIGKILL)
                killed = time.perf_counter()
            if isinstance(message, Result):
                rerun = time.perf_counter() - killed
                break
    # Ray Serve starts the replica again; the front end gives it jobs once it answers.
    while victim.info.pid == pid:
        time.sleep(0.1)
    return {"kill_to_result_s": round(rerun, 3), "kill_to_replica_back_s": round(time.perf_counter() - killed, 3)}


def main() -> None:
    report: dict = {"batch_jobs": BATCH, "batch_job": SMALL, "single_job": SINGLE, "repeats": REPEATS}
    models = tiny_models()
    with ServerProcess(models, threads=2) as local:
        report["one_server_2_threads_batch_s"] = round(batch_seconds(local.url, 1), 3)
    with tempfile.TemporaryDirectory() as out, ServerProcess(models, threads=1) as local:
        config = ServerConfig(models=[models], outputs=Path(out), device="cpu", cluster="auto", replicas=2,
                              replica_threads=1)
        with running_server(config) as cluster:
            # Taken in turns, so that the load of the machine's other work falls on both alike.
            batches: dict[str, list[float]] = {"local": [], "cluster": []}
            singles: dict[str, list[float]] = {"local": [], "cluster": []}
            cancels: dict[str, list[float]] = {"local": [], "cluster": []}
            for _ in range(2):
                for name, address, workers in (("local", local.url, 1), ("cluster", url(cluster), 2)):
                    batches[name].append(batch_seconds(address, workers))
                    singles[name] += single_seconds(address)
                    cancels[name].append(cancel_seconds(address))
            report["rerun"] = rerun_seconds(cluster)

    two = statistics.median(batches["cluster"])
    report["one_server_1_thread_batch_s"] = round(statistics.median(batches["local"]), 3)
    report["two_replicas_1_thread_batch_s"] = round(two, 3)
    report["throughput_vs_2_threads"] = round(report["one_server_2_threads_batch_s"] / two, 3)
    report["throughput_vs_1_thread"] = round(report["one_server_1_thread_batch_s"] / two, 3)
    # What the front end adds to a job: the client's wait beyond the job's own time where it ran, on one
    # machine and through the cluster (the job's own time differs with the machine's other load).
    def added(name: str) -> float:
        return statistics.median(waited - ran for waited, ran in singles[name])

    def waited(name: str) -> float:
        return statistics.median(w for w, _ in singles[name])

    report["single_job"] |= {
        "one_machine_wait_median_s": round(waited("local"), 4), "cluster_wait_median_s": round(waited("cluster"), 4),
        "one_machine_added_ms": round(added("local") * 1000, 1), "cluster_added_ms": round(added("cluster") * 1000, 1),
        "cluster_added_fraction": round(added("cluster") / waited("cluster"), 4),
        "cluster_more_than_one_machine_fraction": round((added("cluster") - added("local")) / waited("local"), 4),
        "target_fraction": 0.05,
    }
    report["cancel_one_machine_median_s"] = round(statistics.median(cancels["local"]), 4)
    report["cancel_cluster_median_s"] = round(statistics.median(cancels["cluster"]), 4)
    report["rerun"]["job_median_s"] = round(waited("cluster"), 4)
    write_report(report, "cluster", show=True)


if __name__ == "__main__":
    main()
