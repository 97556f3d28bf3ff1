"""Live-mode freshness: a scripted painter against a real server, our policy vs "wait, never cancel".

A painter changes the canvas every 100 ms for 10 s. Freshness of a change = time from the change
to the arrival of the first result that includes it. Both policies run in one process, against
one server, with one generation time T measured in the same run.

- ours: every change is sent at once as a `live` frame; the server supersedes waiting frames and
  cancels a running frame that is not past half of its steps.
- peer: polls every 100 ms and starts a generation only when none is in flight (never cancels).
  This is the closest peer's policy without its 0.25 s debounce, i.e. the peer at its fastest.

Two set-ups: one generation faster than the painter's interval, and one several times slower.
The server runs in its own process.

Run: python -m bench.live  → bench/results/live.json
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

from websockets import ConnectionClosed

from bench.report import write_report
from shared.client import Client
from shared.messages import Cancelled, Generate, Image, Live, Progress, Result
from testing.processes import ServerProcess

STRENGTH = 0.5
INTERVAL, DURATION = 0.1, 10.0
# (name, canvas side, steps): one generation faster than the painter's interval, one much slower.
SETUPS = [("fast", 64, 6), ("slow", 256, 20)]


def canvas(version: int, side: int) -> Image:
    shade = (version * 37) % 256
    return Image(width=side, height=side, format="rgba8", data=bytes((shade, 120, 200, 255)) * side * side)


def request(cls: type, version: int, side: int, steps: int, **extra) -> Generate:
    return cls(id=f"v{version}-{uuid.uuid4().hex[:6]}", mode="img2img", model="tiny-sd15", prompt="a red circle",
               image=canvas(version, side), strength=STRENGTH, steps=steps, seed=1, **extra)


def version_of(job_id: str) -> int:
    return int(job_id.split("-")[0][1:])


@dataclass
class Run:
    changes: list[float] = field(default_factory=list)  # time of change v at index v
    results: list[tuple[float, int]] = field(default_factory=list)  # (arrival, version)
    sent: int = 0
    started: set[str] = field(default_factory=set)
    superseded: int = 0
    painting_ended: float = 0.0


def listen(client: Client, run: Run, in_flight: threading.Event, done: threading.Event) -> None:
    try:
        _listen(client, run, in_flight, done)
    except ConnectionClosed:  # the painter closed the connection after its wait
        pass


def _listen(client: Client, run: Run, in_flight: threading.Event, done: threading.Event) -> None:
    for message in client.messages(timeout=120):
        if isinstance(message, Progress):
            run.started.add(message.id)
        elif isinstance(message, Result):
            run.results.append((time.monotonic(), version_of(message.id)))
            in_flight.clear()
            if run.painting_ended and version_of(message.id) == len(run.changes) - 1:
                done.set()
                return
        elif isinstance(message, Cancelled):
            run.superseded += message.reason == "superseded"


def paint(server_url: str, policy: str, generation_time: float, side: int, steps: int) -> Run:
    run = Run()
    in_flight, done = threading.Event(), threading.Event()
    with Client(server_url, name=f"painter-{policy}") as client:
        listener = threading.Thread(target=listen, args=(client, run, in_flight, done), daemon=True)
        listener.start()
        sent_version = -1
        start = time.monotonic()
        next_change = start
        while True:
            now = time.monotonic()
            if now >= next_change and now - start < DURATION:
                run.changes.append(now)
                next_change += INTERVAL
                if policy == "ours":
                    client.send(request(Live, len(run.changes) - 1, side, steps, session="bench"))
                    run.sent += 1
            if now - start >= DURATION and not run.painting_ended:
                run.painting_ended = now
            latest = len(run.changes) - 1
            if policy == "peer" and not in_flight.is_set() and latest > sent_version:
                in_flight.set()
                client.send(request(Generate, latest, side, steps))
                sent_version = latest
                run.sent += 1
            if run.painting_ended and (done.is_set() or now - run.painting_ended > 10 * generation_time + 5):
                break
            time.sleep(0.005 if policy == "ours" else INTERVAL)
        listener.join(1)
    return run


def summarize(run: Run, generation_time: float) -> dict:
    latencies = []
    for version, changed in enumerate(run.changes):
        arrival = next((t for t, v in sorted(run.results) if v >= version and t >= changed), None)
        if arrival is not None:
            latencies.append(arrival - changed)
    last = run.changes[-1]
    last_seen = next((t for t, v in sorted(run.results) if v == len(run.changes) - 1), None)
    during = [t for t, _ in run.results if t <= run.painting_ended]
    return {
        "freshness_last_change_s": round(last_seen - last, 3) if last_seen else None,
        "freshness_last_change_in_T": round((last_seen - last) / generation_time, 2) if last_seen else None,
        "freshness_mean_s": round(statistics.mean(latencies), 3),
        "freshness_p50_s": round(statistics.median(latencies), 3),
        "freshness_max_s": round(max(latencies), 3),
        "freshness_max_in_T": round(max(latencies) / generation_time, 2),
        "results_per_second_while_painting": round(len(during) / DURATION, 2),
        "results": len(run.results),
        "frames_sent": run.sent,
        "frames_executed": len(run.started),
        "frames_superseded": run.superseded,
    }


def compare(server_url: str, side: int, steps: int) -> dict:
    with Client(server_url, name="timer") as timer:
        timer.generate(request(Generate, 0, side, steps))  # load the model
        times = []
        for version in range(5):
            started = time.monotonic()
            timer.generate(request(Generate, version, side, steps))
            times.append(time.monotonic() - started)
    generation_time = statistics.median(times)
    return {
        "size": side, "steps": steps,
        "generation_time_T_s": round(generation_time, 3),
        "ours": summarize(paint(server_url, "ours", generation_time, side, steps), generation_time),
        "peer_wait_never_cancel": summarize(paint(server_url, "peer", generation_time, side, steps),
                                            generation_time),
    }


def main() -> None:
    report = {"setup": {"model": "tiny-sd15", "strength": STRENGTH, "change_interval_s": INTERVAL,
                        "painting_s": DURATION, "server": "its own process, 1 torch thread"},
              "target_last_change_freshness_in_T": 1.5}
    # The server runs in its own process so the painter never competes with it for the GIL.
    with ServerProcess(threads=1) as server:
        for name, side, steps in SETUPS:
            report[name] = compare(server.url, side, steps)
    write_report(report, "live", show=True)


if __name__ == "__main__":
    main()
