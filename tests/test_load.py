"""Many clients, queue limits, idle and dead connections, and clients that do not read.

The long load run is `python -m bench.load`; the soak run `python -m bench.soak`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import socket
import statistics
import string
import threading
import time
import tracemalloc

import pytest
import torch
import websockets.sync.client

from bench.load import run_load, summarise
from server.config import ServerConfig
from server.jobs.job import Job
from server.net import server as net_server
from server.net.connection import MAX_PENDING_PROGRESS, Connection
from shared import codec
from shared.client import Client, ServerError
from shared.messages import (
    MAX_REGIONS,
    Cancel,
    Cancelled,
    Error,
    Generate,
    Image,
    Mask,
    Progress,
    Queued,
    Region,
    Result,
)
from testing.processes import ServerProcess
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


def hold_the_worker(client: Client) -> Generate:
    """A slow job of `client`'s, once it runs: what is sent next waits in the queue."""
    blocker = slow_request()
    client.send(blocker)
    next(message for message in client.messages(timeout=60) if isinstance(message, Progress))
    return blocker


def test_per_connection_and_global_queue_caps_answer_busy(models_dir, tmp_path):
    config = ServerConfig(models=[models_dir], outputs=tmp_path, max_queued_per_connection=3, max_queued=4)
    with running_server(config) as server, Client(url(server)) as first, Client(url(server)) as second:
        blocker = hold_the_worker(first)
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
        # Connections count from the moment they open, not from their hello; but one that has not said
        # hello makes room for a newcomer when all slots are taken.
        holder = RawClient(url(server))
        wait_until(lambda: len(server.connections) == 3, what="the silent connection to be counted")
        with Client(url(server)) as newcomer:
            assert newcomer.models()
        pushed_out = holder.receive(timeout=10)
        assert pushed_out.code == "busy" and "waited longest" in pushed_out.message
        assert holder.closed(timeout=5)
    with pytest.raises(ValueError, match="--max-connections"):
        ServerConfig(max_connections=0).check()


# --- strangers and slow senders ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "s3cret"], ids=["no-token", "token"])
def test_silent_connections_cannot_keep_the_artist_out(models_dir, tmp_path, token):
    config = ServerConfig(models=[models_dir], outputs=tmp_path, token=token)
    with running_server(config) as server, contextlib.ExitStack() as stack:
        # An ordinary websocket library that connects and says nothing (it answers pings in the background).
        silent = [stack.enter_context(websockets.sync.client.connect(url(server))) for _ in range(32)]
        wait_until(lambda: len([c for c in server.connections if not c.leaving]) == 32, what="32 open connections")
        started = time.perf_counter()
        with Client(url(server), name="artist", token=token) as artist:
            waited = time.perf_counter() - started
            assert artist.welcome.models
            assert artist.generate(request(), timeout=60).images
        # The one that waited longest made room, and was told why.
        pushed_out = codec.decode_server(silent[0].recv(timeout=10))
        assert pushed_out.code == "busy" and "waited longest" in pushed_out.message
    print(f"\nwelcome after {waited * 1000:.1f} ms with 32 silent connections open")
    assert waited < 1.0


def test_connections_that_wait_without_hello_are_few_and_short_lived(models_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(net_server, "HELLO_GRACE", 0.2)
    config = ServerConfig(models=[models_dir], outputs=tmp_path, hello_slots=2, hello_timeout=1.5)
    with running_server(config) as server:
        first, second = RawClient(url(server)), RawClient(url(server))
        time.sleep(0.5)  # both have waited longer than a hello takes
        third = RawClient(url(server))
        assert first.receive(timeout=5).code == "busy" and first.closed(timeout=5)
        # Without a hello, the rest are closed at the hello deadline.
        for client in (second, third):
            late = client.receive(timeout=5)
            assert (late.code, late.field) == ("unauthorized", "type") and "1.5 s" in late.message
            assert client.closed(timeout=5)
        wait_until(lambda: not server.connections, what="the connections to close")


def dribble(client: RawClient, wire: bytes, pieces: int, pause: float) -> bool:
    """Send `wire` (a frame's bytes) in `pieces` parts `pause` seconds apart; False once the server has closed."""
    size = -(-len(wire) // pieces)
    for start in range(0, len(wire), size):
        try:
            client.socket.sendall(wire[start:start + size])
        except OSError:
            return False
        time.sleep(pause)
    return True


def frame_bytes(client: RawClient, payload: bytes, fin: bool = True, continuation: bool = False) -> bytes:
    if continuation:
        client.protocol.send_continuation(payload, fin=fin)
    else:
        client.protocol.send_binary(payload, fin=fin)
    return b"".join(client.protocol.data_to_send())


@pytest.mark.parametrize("how", ["one-frame", "fragments"])
@pytest.mark.parametrize("greeted", [False, True], ids=["before-hello", "after-hello"])
def test_a_message_that_stops_arriving_is_cut_off(models_dir, tmp_path, how, greeted):
    config = ServerConfig(models=[models_dir], outputs=tmp_path, receive_window=0.5, min_receive_rate=64 * 1024)
    with running_server(config) as server, Client(url(server)) as bystander:
        slow = RawClient(url(server))
        if greeted:
            slow.hello()
        frame = codec.encode(tiny_request(prompt="x" * 30_000))
        if how == "one-frame":  # a whole frame, 100 bytes every 50 ms: 2 KiB/s
            wire = frame_bytes(slow, frame)
            pieces = [wire[i:i + 100] for i in range(0, len(wire), 100)]
        else:  # a fragment every 50 ms
            pieces = [frame_bytes(slow, frame[:100], fin=False)]
            pieces += [frame_bytes(slow, frame[i:i + 100], fin=False, continuation=True)
                       for i in range(100, len(frame), 100)]
        started = time.monotonic()
        for piece in pieces:
            if not dribble(slow, piece, 1, 0.05):
                break
            if slow.closed(timeout=0):
                break
        cut_after = time.monotonic() - started
        assert cut_after < 3, "the slow message was never cut off"
        assert bystander.models()
        slow.close()
    assert cut_after > 0.5


def test_a_message_that_keeps_arriving_fast_enough_is_served(models_dir, tmp_path):
    config = ServerConfig(models=[models_dir], outputs=tmp_path, receive_window=0.5, min_receive_rate=64 * 1024)
    with running_server(config) as server:
        client = RawClient(url(server))
        client.hello()
        image = Image(width=256, height=200, format="rgba8", data=bytes(256 * 200 * 4))  # 200 KiB
        job = request(mode="img2img", image=image, strength=0.5, steps=2)
        # 20 parts 0.1 s apart: 100 KiB/s for 2 s, four windows of the 64 KiB/s rule.
        assert dribble(client, frame_bytes(client, codec.encode(job)), 20, 0.1)
        assert isinstance(client.receive(timeout=60), Queued)
        client.close()


def test_more_than_a_hello_before_hello_is_refused(server):
    client = RawClient(url(server))
    client.send(tiny_request(prompt="x" * 19_000, regions=[Region(mask=Mask(width=64, height=64, format="a8",
                                                                       data=bytes(64 * 64)), prompt="y" * 19_000)]
                             * 3))
    refused = client.receive(timeout=10)
    assert (refused.code, refused.field) == ("too_large", "frame") and "send hello first" in refused.message
    assert client.closed(timeout=5)


def test_unfinished_messages_over_the_receive_budget_are_refused_busy(models_dir, tmp_path):
    config = ServerConfig(models=[models_dir], outputs=tmp_path, receive_budget=1024 * 1024)
    with running_server(config) as server:
        first, second = RawClient(url(server)), RawClient(url(server))
        first.hello()
        second.hello()
        image = Image(width=400, height=400, format="rgba8", data=bytes(400 * 400 * 4))  # 625 KiB
        first_wire = frame_bytes(first, codec.encode(request(mode="img2img", image=image)))
        first.socket.sendall(first_wire[:-1000])  # held by the server, unfinished
        wait_until(lambda: server.receiving.held > 600 * 1024, what="the first message to be held")
        second.socket.sendall(frame_bytes(second, codec.encode(request(mode="img2img", image=image))))
        refused = second.receive(timeout=10)
        assert refused.code == "busy" and "--receive-budget" in refused.message
        assert second.closed(timeout=5)
        # The first one is served once it is complete, and what it held is given back.
        first.socket.sendall(first_wire[-1000:])
        assert isinstance(first.receive(timeout=30), Queued)
        wait_until(lambda: server.receiving.held == 0, what="the held bytes to be given back")
        first.close()


def test_queued_inputs_over_their_byte_budgets_are_refused_busy(models_dir, tmp_path):
    mib = 1024 * 1024
    config = ServerConfig(models=[models_dir], outputs=tmp_path, connection_queue_budget=mib,
                          queue_budget=3 * mib // 2)
    image = Image(width=320, height=320, format="rgba8", data=bytes(320 * 320 * 4))  # 400 KiB

    def refine():
        return request(mode="img2img", image=image, strength=0.5, steps=2)

    with running_server(config) as server, Client(url(server)) as first, Client(url(server)) as second:
        blocker = hold_the_worker(first)
        mine = [refine() for _ in range(3)]  # 1 200 KiB with the third
        for job in mine:
            first.send(job)
        replies = collect(first, {j.id for j in mine}, (Queued, Error))
        assert [type(replies[j.id]) for j in mine] == [Queued, Queued, Error]
        refused = replies[mine[2].id]
        assert refused.code == "busy" and "--connection-queue-budget" in refused.message
        assert "1.2 MiB" in refused.message and "budget of 1.0 MiB" in refused.message
        theirs = [refine() for _ in range(2)]  # the server's jobs would hold 1 600 KiB with the second
        for job in theirs:
            second.send(job)
        replies = collect(second, {j.id for j in theirs}, (Queued, Error))
        assert [type(replies[j.id]) for j in theirs] == [Queued, Error]
        assert replies[theirs[1].id].code == "busy" and "--queue-budget" in replies[theirs[1].id].message
        # Jobs that end give their bytes back.
        for job in (blocker, *mine[:2]):
            first.send(Cancel(id=job.id))
        assert len(collect(first, {blocker.id, mine[0].id, mine[1].id}, (Cancelled,))) == 3
        retry = refine()
        second.send(retry)
        assert isinstance(collect(second, {retry.id}, (Queued, Error))[retry.id], Queued)
    with pytest.raises(ValueError, match="--queue-budget"):
        ServerConfig(queue_budget=1000).check()


# --- the event loop ---------------------------------------------------------------------------------------


def hostile_prompts(request_id: str, texts: list[str], **fields) -> Generate:
    """A job request with every prompt the protocol allows (34) set, each a distinct one of `texts`, the
    last naming a LoRA the server does not have: it is refused once all of them are read."""
    texts = iter(texts[:2 + 2 * MAX_REGIONS - 1] + [texts[-1] + "<lora:does-not-exist:1>"])
    prompt, negative_prompt = next(texts), next(texts)
    mask = Mask(width=8, height=8, format="a8", data=bytes(64))
    regions = [Region(mask=mask, prompt=next(texts), negative_prompt=next(texts)) for _ in range(MAX_REGIONS)]
    return tiny_request(id=request_id, prompt=prompt, negative_prompt=negative_prompt, regions=regions, **fields)


def worst_frames() -> list[Generate]:
    letters = string.ascii_letters
    return [
        # The frame that froze the server for a minute: 10 000 unclosed brackets in each prompt.
        hostile_prompts("unclosed", [("(" + letter) * 9_988 for letter in letters]),
        # The costliest prompts that are read to the end: the deepest nesting allowed, then pairs.
        hostile_prompts("nested", ["(" * 15 + f"({letter})" * 6_600 for letter in letters]),
        # compel's grammar at its length limit, until the reading budget runs out.
        hostile_prompts("compel", [f'"{letter}b" ' * 199 for letter in letters], prompt_syntax="compel"),
    ]


def test_a_client_sending_the_costliest_frames_does_not_hold_up_the_others(tmp_path):
    with ServerProcess(None, tmp_path) as server, Client(server.url, name="artist") as artist:
        hostile = Client(server.url, name="hostile")
        replies: list[Error] = []

        def send_all() -> None:
            for frame in worst_frames():
                hostile.send(frame)
                replies.append(hostile.receive(timeout=120))

        sender = threading.Thread(target=send_all)
        round_trips = []
        artist.models()
        sender.start()
        while sender.is_alive():
            started = time.perf_counter()
            artist.models()
            round_trips.append(time.perf_counter() - started)
        sender.join()
        hostile.close()
    slowest = statistics.quantiles(round_trips, n=20)[-1]
    print(f"\n{len(round_trips)} round trips while the frames were read: median "
          f"{statistics.median(round_trips) * 1000:.1f} ms, 95th percentile {slowest * 1000:.1f} ms, "
          f"slowest {max(round_trips) * 1000:.1f} ms")
    assert (replies[0].code, replies[0].field) == ("bad_request", "prompt")
    # Read to the unknown LoRA at the end, or until the reading budget ran out on a busy machine.
    assert replies[1].code in ("unknown_model", "too_large") and replies[1].field.startswith("regions")
    assert replies[2].code == "too_large"
    assert len(round_trips) >= 10  # the frames kept the reading thread busy for a while
    # The event loop held by the reading took 54-94 s before; the aim is under 100 ms. The slowest of
    # several hundred round trips is left a margin for a machine busy with other work.
    assert slowest < 0.1 and max(round_trips) < 1.0


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


def test_a_backlog_of_tiny_frames_read_after_a_stall_holds_a_bounded_heap(server):
    # While the event loop is busy the kernel piles up what a client sends; the server then reads it in
    # the transport's read size, and websockets turns a read into frame objects all at once: 256 KiB of
    # 7-byte frames made 3.4 MB of heap.
    flooder = slow_reader(server)
    (connection,) = server.connections
    stalled, released = threading.Event(), threading.Event()
    connection.websocket.loop.call_soon_threadsafe(lambda: (stalled.set(), released.wait(30)))
    assert stalled.wait(10)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sent = 0
        while sent < 100_000 and flooder.try_send_raw(b"\xc1"):
            sent += 1
        released.set()
        time.sleep(2)
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        released.set()
        tracemalloc.stop()
    print(f"\n{sent} frames ({sent * 7} bytes) waiting after a stall: heap growth {grown} bytes")
    assert sent * 7 > 256 * 1024  # more than one read of the old size was waiting
    assert grown < 1024 * 1024
    replies = [flooder.receive(timeout=60) for _ in range(sent)]
    assert all(isinstance(r, Error) and r.field == "frame" for r in replies)
    flooder.close()


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
