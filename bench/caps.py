"""The server under the worst load its byte budgets allow: its peak resident memory, and how fast it
still answers another client.

A server process with the tiny models and budgets set small enough for a shared machine
(--queue-budget, --connection-queue-budget, --receive-budget) is filled, while one long job runs:
  1. queued inputs: img2img requests with 4096² rgba8 images (64 MiB each) from several
     connections, until every one of them is answered `busy`;
  2. unfinished messages: more connections each send 90 % of such a request and then keep it
     coming at 100 KiB/s (above the 64 KiB/s rule), until one is refused `busy`;
  3. meanwhile another client's `models` round trips are timed.
The server's resident memory is sampled every 50 ms throughout; the bound it must stay under is its
memory before the load plus the queue budget plus twice the receive budget (a message being decoded
exists twice for a moment: as it arrived and as decoded).

Run: python -m bench.caps → bench/results/caps.json
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

from bench.report import write_report
from shared import codec
from shared.client import Client
from shared.messages import Cancel, Error, Generate, Image, Queued
from testing.processes import ServerProcess
from testing.raw_client import RawClient

MIB = 2**20
QUEUE_BUDGET, CONNECTION_BUDGET, RECEIVE_BUDGET = 1024, 512, 512  # MiB
SIDE = 4096
# Each connection queues until refused; four reach the server-wide budget.
QUEUEING_CONNECTIONS = 4


IMAGE = Image(width=SIDE, height=SIDE, format="rgba8", data=bytes(SIDE * SIDE * 4))


def big_request() -> Generate:
    # fit_native: were it ever to run, it would run at the model's small native size.
    return Generate(id=uuid.uuid4().hex, mode="img2img", model="tiny-sd15", prompt="a lighthouse", image=IMAGE,
                    strength=0.5, steps=2, fit_native=True)


class Sampler(threading.Thread):
    """The server's resident memory every 50 ms, until stopped."""

    def __init__(self, server: ServerProcess):
        super().__init__(daemon=True)
        self.server, self.samples, self.stopped = server, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append(self.server.rss())
            time.sleep(0.05)


def fill_queue(server: ServerProcess) -> tuple[list[Client], int, list[str]]:
    """Connections that queue big jobs until each is refused; (connections, jobs queued, refusals)."""
    clients, queued, refusals = [], 0, []
    for _ in range(QUEUEING_CONNECTIONS):
        client = Client(server.url, name="queueing")
        clients.append(client)
        while True:
            client.send(big_request())
            reply = client.receive(timeout=120)
            if isinstance(reply, Queued):
                queued += 1
                continue
            assert isinstance(reply, Error) and reply.code == "busy", reply
            refusals.append(reply.message)
            break
    return clients, queued, refusals


def fill_receiving(server: ServerProcess, stop: threading.Event) -> tuple[int, str]:
    """Connections holding 90 % of a big request each, kept arriving, until one is refused; returns how
    many the server held and the refusal."""
    held: list[tuple[RawClient, bytes]] = []
    frame = codec.encode(big_request())
    while True:
        client = RawClient(server.url)
        client.hello()
        client.protocol.send_binary(frame)
        wire = b"".join(client.protocol.data_to_send())
        cut = len(wire) * 9 // 10
        client.socket.sendall(wire[:cut])
        time.sleep(0.5)
        try:
            refusal = client.receive(timeout=0.5)
        except TimeoutError:
            held.append((client, wire[cut:]))
            continue
        assert isinstance(refusal, Error) and refusal.code == "busy", refusal
        break

    def keep_coming() -> None:
        position = 0
        while not stop.wait(1.0):
            for held_client, rest in held:
                held_client.socket.sendall(rest[position:position + 100 * 1024])
            position += 100 * 1024

    threading.Thread(target=keep_coming, daemon=True).start()
    return len(held), refusal.message


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    budgets = ("--queue-budget", str(QUEUE_BUDGET), "--connection-queue-budget", str(CONNECTION_BUDGET),
               "--receive-budget", str(RECEIVE_BUDGET))
    with ServerProcess(None, None, *budgets) as server, Client(server.url, name="artist") as artist:
        artist.generate(Generate(id="warm", mode="txt2img", model="tiny-sd15", prompt="warm", width=64, height=64,
                                 steps=1))
        time.sleep(1)
        before = server.rss()
        sampler = Sampler(server)
        sampler.start()
        blocker = Generate(id="blocker", mode="txt2img", model="tiny-sd15", prompt="slow", width=1024,
                           height=1024, steps=20)
        artist.send(blocker)
        round_trips: list[float] = []
        stop = threading.Event()

        def time_round_trips() -> None:
            with Client(server.url, name="watcher") as watcher:
                while not stop.is_set():
                    started = time.perf_counter()
                    watcher.models()
                    round_trips.append(time.perf_counter() - started)
                    time.sleep(0.05)

        watcher = threading.Thread(target=time_round_trips, daemon=True)
        watcher.start()
        clients, queued, queue_refusals = fill_queue(server)
        held, receive_refusal = fill_receiving(server, stop)
        time.sleep(5)  # everything held at once, the held messages still arriving
        stop.set()
        watcher.join()
        sampler.stopped.set()
        sampler.join()
        artist.send(Cancel(id=blocker.id))
        for client in clients:
            client.close()
    peak = max(sampler.samples)
    bound = before + (QUEUE_BUDGET + 2 * RECEIVE_BUDGET) * MIB
    report = {
        "budgets_mib": {"queue": QUEUE_BUDGET, "connection_queue": CONNECTION_BUDGET, "receive": RECEIVE_BUDGET},
        "request_mib": round(len(codec.encode(big_request())) / MIB, 1),
        "jobs_queued": queued, "queue_refusals": queue_refusals,
        "unfinished_messages_held": held, "receive_refusal": receive_refusal,
        "rss_before_mib": round(before / MIB, 1), "rss_peak_mib": round(peak / MIB, 1),
        "bound_mib": round(bound / MIB, 1), "within_bound": peak <= bound,
        "round_trips": len(round_trips), "round_trip_median_ms": round(statistics.median(round_trips) * 1000, 1),
        "round_trip_max_ms": round(max(round_trips) * 1000, 1),
    }
    write_report(report, "caps", show=True)


if __name__ == "__main__":
    main()
