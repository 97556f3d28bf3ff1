"""Many clients, queue limits, idle and dead connections, and clients that do not read.

The long load run is `python -m bench.load`; the soak run `python -m bench.soak`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import socket
import time
import tracemalloc

import pytest
import torch

from bench.load import run_load, summarise
from server.config import ServerConfig
from server.jobs.job import Job
from server.net.connection import MAX_PENDING_PROGRESS, Connection
from shared import codec
from shared.client import Client, ServerError
from shared.messages import Cancel, Cancelled, Error, Progress, Queued, Result
from testing.raw_client import RawClient
from testing.serving import running_server, slow_request, tiny_request, url, wait_for_log, wait_until

request = functools.partial(tiny_request, steps=1)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Tiny models are all per-operation overhead: a second thread only adds spin-waiting on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- many clients ----------------------------------------------------------------------------------


def test_twenty_clients_sending_jobs_and_cancels_get_every_job_accounted_for(server):
    ended: list[Job] = []
    log_to_file = server.queue.on_end
    server.queue.on_end = lambda job, message: (ended.append(job), log_to_file(job, message))
    try:
        runs = run_load(url(server), clients=20, jobs=3, cancel_rate=0.3, seed=5)
    finally:
        server.queue.on_end = log_to_file
    sent = {job for run in runs for job in run.sent}
    log = [line for line in map(json.loads, server.config.log_file.read_text().splitlines()) if line["id"] in sent]
    report = summarise(runs, log)
    assert report["violations"] == 0, report["first_violations"]
    assert report["jobs_queued"] == 60 and report["outcomes"]["result"] > 0
    assert report["outcomes"].get("cancelled", 0) > 0

    # Every position a client was told is the number of jobs queued or running ahead of its job then.
    told = {job: position for run in runs for job, position in run.positions().items()}
    assert sorted(job.id for job in ended) == sorted(told)
    for job in ended:
        ahead = sum(1 for other in ended if other.queued_at < job.queued_at < other.ended_at)
        assert told[job.id] == ahead, f"{job.id} was told position {told[job.id]}, {ahead} jobs were ahead"
    # First in, first started.
    started = sorted((job for job in ended if job.started_at is not None), key=lambda job: job.started_at)
    assert started == sorted(started, key=lambda job: job.queued_at)


def collect(client: Client, ids: set[str], kinds: tuple[type, ...]) -> dict[str, object]:
    """The first message of one of `kinds` for each of `ids`."""
    found: dict[str, object] = {}
    for message in client.messages(timeout=60):
        if isinstance(message, kinds) and getattr(message, "id", None) in ids and message.id not in found:
            found[message.id] = message
        if set(found) == ids:
            return found


def test_per_connection_and_global_queue_caps_answer_busy(models_dir, tmp_path):
    config = ServerConfig(models=[models_dir], outputs=tmp_path, max_queued_per_connection=3, max_queued=4)
    with running_server(config) as server, Client(url(server)) as first, Client(url(server)) as second:
        blocker = slow_request()
        first.send(blocker)
        for message in first.messages(timeout=60):
            if isinstance(message, Progress):
                break
        mine = [request() for _ in range(3)]
        theirs = [request() for _ in range(3)]
        for job in mine:
            first.send(job)
        replies = collect(first, {j.id for j in mine}, (Queued, Error))
        assert [getattr(replies[j.id], "position", None) for j in mine] == [1, 2, None]
        assert replies[mine[2].id].code == "busy" and "3 jobs" in replies[mine[2].id].message
        for job in theirs:
            second.send(job)
        replies = collect(second, {j.id for j in theirs}, (Queued, Error))
        assert [getattr(replies[j.id], "position", None) for j in theirs] == [3, 4, None]
        assert replies[theirs[2].id].code == "busy" and "queue is full" in replies[theirs[2].id].message
        # Cancelling makes room again.
        second.send(Cancel(id=theirs[0].id))
        assert collect(second, {theirs[0].id}, (Cancelled,))
        retry = request()
        second.send(retry)
        assert collect(second, {retry.id}, (Queued,))[retry.id].position == 4
        for job in (blocker, *mine[:2]):
            first.send(Cancel(id=job.id))
        assert len(collect(first, {blocker.id, mine[0].id, mine[1].id}, (Cancelled,))) == 3


def test_connections_over_the_cap_are_refused_busy_and_a_freed_place_is_taken_again(models_dir, tmp_path):
    config = ServerConfig(models=[models_dir], outputs=tmp_path, max_connections=3)
    with running_server(config) as server, contextlib.ExitStack() as open_clients:
        clients = [open_clients.enter_context(Client(url(server))) for _ in range(3)]
        with pytest.raises(ServerError) as refused:
            Client(url(server))
        assert refused.value.error.code == "busy"
        assert "3 connections" in refused.value.error.message and "--max-connections" in refused.value.error.message
        # A client that never says hello is told at once, and not kept open.
        silent = RawClient(url(server))
        assert silent.receive(timeout=10) == refused.value.error
        assert silent.closed(timeout=5)
        for client in clients:
            assert client.generate(request(), timeout=60).images
        assert len(server.connections) == 3

        clients.pop().close()
        wait_until(lambda: len(server.connections) == 2, what="the closed connection to leave")
        with Client(url(server)) as newcomer:
            assert newcomer.generate(request(), timeout=60).images
        wait_until(lambda: len(server.connections) == 2, what="the newcomer to leave")
        # Connections count from the moment they open, not from their hello.
        holder = RawClient(url(server))
        wait_until(lambda: len(server.connections) == 3, what="the silent connection to be counted")
        with pytest.raises(ServerError):
            Client(url(server))
        holder.close()
    with pytest.raises(ValueError, match="--max-connections"):
        ServerConfig(max_connections=0).check()


# --- idle and dead connections --------------------------------------------------------------------------


def test_idle_connections_are_kept_alive_by_pings_and_silent_ones_dropped(models_dir, tmp_path):
    config = ServerConfig(models=[models_dir], outputs=tmp_path, ping_interval=0.2, ping_timeout=0.5)
    with running_server(config) as server, Client(url(server)) as idle:
        silent = RawClient(url(server))
        silent.hello()  # and then never reads again, so never answers a ping
        time.sleep(1.5)  # seven ping intervals
        assert idle.models()
        wait_until(lambda: len(server.connections) == 1, timeout=5, what="the silent connection to be dropped")
        (alive,) = server.connections
        assert alive.websocket.latency > 0  # its pongs came back
        assert silent.closed(timeout=5)


# --- clients that do not read ------------------------------------------------------------------------------


def slow_reader(server) -> RawClient:
    """A greeted client on a slow network: the kernel holds only a few KiB on either side, so what the
    client does not read stays in the server process, where it is measured."""
    client = RawClient(url(server), receive_buffer=4096)
    client.hello()
    (connection,) = server.connections
    connection.websocket.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return client


def _heap_growth_while_flooding(server, frames: int) -> int:
    """How far this process's Python heap grows at its fullest while the server answers `frames` bad
    frames from a client that does not read: the socket's reads, the replies waiting to be sent, the
    frames being decoded."""
    flooder = slow_reader(server)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(frames):
            while not flooder.try_send_raw(b"\xc1"):
                time.sleep(0.01)  # the server stopped reading us: back-pressure reached the client
        time.sleep(1)
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # No reply was lost on the way: every frame gets its error, in order.
    replies = [flooder.receive(timeout=30) for _ in range(frames)]
    assert all(isinstance(r, Error) and r.field == "frame" for r in replies)
    flooder.close()
    wait_until(lambda: not server.connections, timeout=10, what="the flooder to be gone")
    return grown


def test_a_client_flooding_requests_without_reading_cannot_grow_the_server_buffers(server):
    # The buffers' fixed sizes (a socket read takes up to 256 KiB) differ between machines; what must
    # not happen is growth with the flood's length: 40 000 replies waiting would be about 7 MB.
    short = _heap_growth_while_flooding(server, 2_000)
    long = _heap_growth_while_flooding(server, 40_000)
    print(f"\nheap growth: {short} bytes for 2 000 frames, {long} bytes for 40 000")
    assert long < short + 1024 * 1024


def test_a_client_that_stops_reading_gets_the_newest_previews_not_unbounded_buffers(server):
    steps = 60
    reader = slow_reader(server)
    job = request(width=256, height=256, steps=steps, preview=True, result_format="png")
    reader.send(job)
    wait_for_log(server, [job.id], timeout=120)
    # All the client gets now is what the server, and the small socket buffers, held for it.
    messages = []
    while not isinstance(message := reader.receive(timeout=60), Result):
        messages.append(message)
    reader.close()
    progress = [m for m in messages if isinstance(m, Progress)]
    preview_bytes = len(progress[0].preview.data)
    held = sum(len(codec.encode(m)) for m in progress)
    print(f"\n{steps} previews of {preview_bytes} bytes: {len(progress)} delivered ({held} bytes)")
    assert progress[-1].step == steps  # the newest survives
    assert len(progress) < steps  # older ones were dropped, not queued
    assert [p.step for p in progress] == sorted(p.step for p in progress)
    assert held <= (MAX_PENDING_PROGRESS + 2) * (preview_bytes + 64) + 96 * 1024


# --- nothing kept ------------------------------------------------------------------------------------------


def test_finished_jobs_and_closed_connections_are_not_kept(server):
    def live() -> tuple[int, int]:
        gc.collect()
        objects = gc.get_objects()
        return sum(type(o) is Job for o in objects), sum(type(o) is Connection for o in objects)

    with Client(url(server)) as warm:
        warm.generate(request())
    wait_until(lambda: not server.connections, what="connections to close")
    before = live()
    slow = []
    for _ in range(3):
        with Client(url(server)) as client:
            for _ in range(5):
                client.generate(request(), timeout=60)
            slow.append(slow_request())
            client.send(slow[-1])
            for message in client.messages(timeout=60):
                if isinstance(message, Progress):
                    break
    wait_for_log(server, [job.id for job in slow])  # cancelled when their clients left
    wait_until(lambda: not server.connections, what="the connections to close")
    assert live() == before
