"""Live mode on the real server: coalescing, the half-way rule, session end, fairness, fixed seed."""

from __future__ import annotations

import threading
import time
import uuid

from shared.client import Client
from shared.messages import Cancelled, Error, Generate, Image, Live, LiveStop, LiveStopped, Progress, Queued, Result
from testing.serving import url

TERMINAL = (Result, Cancelled, Error)


def canvas(shade: int, side: int = 64) -> Image:
    return Image(width=side, height=side, format="rgba8", data=bytes((shade, 90, 160, 255)) * side * side)


def frame(session: str = "s1", shade: int = 100, steps: int = 8, side: int = 64, prompt: str = "a red circle",
          **fields) -> Live:
    return Live(id=uuid.uuid4().hex, session=session, mode="img2img", model="tiny-sd15", prompt=prompt,
                image=canvas(shade, side), strength=0.5, steps=steps, **fields)


def until_terminal(client: Client, ids: set[str], timeout: float = 120) -> dict[str, object]:
    """Terminal messages of `ids`, asserting exactly one each."""
    ends: dict[str, object] = {}
    for message in client.messages(timeout=timeout):
        if isinstance(message, TERMINAL) and message.id in ids:
            assert message.id not in ends, f"two terminal messages for {message.id}"
            ends[message.id] = message
            if len(ends) == len(ids):
                return ends
    raise AssertionError("unreachable")


def first_progress(client: Client, job_id: str, past: float = 0.0) -> None:
    for message in client.messages(timeout=60):
        if isinstance(message, Progress) and message.id == job_id and message.step > past * message.total:
            return


def test_ten_frames_while_one_runs_execute_at_most_two_and_always_the_last(client):
    frames = [frame(shade=i * 20, steps=40, side=128) for i in range(10)]
    client.send(frames[0])
    first_progress(client, frames[0].id)
    for later in frames[1:]:
        client.send(later)
    ends = until_terminal(client, {f.id for f in frames})
    executed = [f.id for f in frames if isinstance(ends[f.id], Result)]
    assert len(executed) <= 2
    assert frames[-1].id in executed
    superseded = [m for m in ends.values() if isinstance(m, Cancelled)]
    assert superseded and all(m.reason == "superseded" for m in superseded)


def test_a_frame_past_half_of_its_steps_finishes(client):
    first, second = frame(steps=40, side=128), frame(shade=200, steps=4)
    client.send(first)
    first_progress(client, first.id, past=0.6)
    client.send(second)
    ends = until_terminal(client, {first.id, second.id})
    assert isinstance(ends[first.id], Result) and isinstance(ends[second.id], Result)


def test_a_running_frame_before_half_is_superseded(client):
    first, second = frame(steps=60, side=128), frame(shade=200, steps=2)
    client.send(first)
    first_progress(client, first.id)
    client.send(second)
    ends = until_terminal(client, {first.id, second.id})
    assert isinstance(ends[first.id], Cancelled) and ends[first.id].reason == "superseded"
    assert isinstance(ends[second.id], Result)


def test_sessions_are_independent(client):
    a, b = frame(session="a", steps=2), frame(session="b", steps=2)
    client.send(a)
    client.send(b)
    ends = until_terminal(client, {a.id, b.id})
    assert all(isinstance(m, Result) for m in ends.values())


def test_one_seed_per_session(client):
    first, second = frame(session="seeded", steps=2), frame(session="seeded", steps=2, shade=30)
    client.send(first)
    one = until_terminal(client, {first.id})[first.id]
    client.send(second)
    two = until_terminal(client, {second.id})[second.id]
    assert one.images[0].seed == two.images[0].seed


def test_live_stop_ends_the_session(client):
    running, waiting = frame(session="stop", steps=60, side=128), frame(session="stop", steps=60, side=128)
    client.send(running)
    first_progress(client, running.id, past=0.6)  # past half: the next frame waits instead of superseding
    client.send(waiting)
    client.send(LiveStop(session="stop"))
    ends, stopped = {}, False
    for message in client.messages(timeout=60):
        if isinstance(message, LiveStopped):
            stopped = message.session == "stop"
        if isinstance(message, TERMINAL):
            ends[message.id] = message
        if stopped and len(ends) == 2:
            break
    assert all(isinstance(m, Cancelled) and m.reason == "live stopped" for m in ends.values())


def test_txt2img_frames_are_refused(client):
    bad = Live(id="t", session="s", mode="txt2img", model="tiny-sd15")
    client.send(bad)
    reply = client.receive(timeout=10)
    assert isinstance(reply, Error) and (reply.code, reply.field, reply.id) == ("bad_request", "mode", "t")


def test_disconnect_ends_sessions(server):
    leaver = Client(url(server), name="leaver")
    job = frame(session="gone", steps=60, side=128)
    leaver.send(job)
    first_progress(leaver, job.id)
    leaver.close()
    started = time.monotonic()
    with Client(url(server)) as other:
        other.generate(Generate(id="next", mode="txt2img", model="tiny-sd15", width=64, height=64, steps=1))
    assert time.monotonic() - started < 10


def test_normal_jobs_are_not_starved_by_a_live_session(server):
    """A painter sends a new frame every time the previous one is queued; a normal job still runs
    after at most one frame of the session."""
    stop = threading.Event()
    painter_results: list[float] = []

    def paint() -> None:
        with Client(url(server), name="painter") as painter:
            shade = 0
            while not stop.is_set():
                shade = (shade + 7) % 256
                painter.send(frame(session="busy", shade=shade, steps=6, side=128))
                for message in painter.messages(timeout=60):
                    if isinstance(message, Queued):
                        break
                    if isinstance(message, Result):
                        painter_results.append(time.monotonic())
                time.sleep(0.02)

    thread = threading.Thread(target=paint, daemon=True)
    thread.start()
    time.sleep(1.0)
    try:
        with Client(url(server), name="artist") as artist:
            queued_at = time.monotonic()
            seen = []
            result = artist.generate(Generate(id="normal", mode="txt2img", model="tiny-sd15", width=128,
                                              height=128, steps=6), on_message=seen.append)
            finished = time.monotonic()
    finally:
        stop.set()
        thread.join(60)
    assert isinstance(result, Result)
    queued = next(m for m in seen if isinstance(m, Queued))
    assert queued.position <= 2  # the running frame and at most one waiting frame of the session
    assert sum(1 for t in painter_results if queued_at < t < finished) <= 2


def test_an_unchanged_prompt_skips_the_text_encoder(client, server):
    """Live frames repeat their prompt: after the first frame, the text encoder is not called."""
    first = frame(session="cached", steps=2, prompt="a lighthouse, (stormy sea:1.2)")
    client.send(first)
    until_terminal(client, {first.id})
    encoder = server.cache.get(server.registry.get("tiny-sd15")).text_encoder
    calls = []
    hook = encoder.register_forward_hook(lambda *args: calls.append(1))
    hits = server.generator.conditioner.cache.hits
    try:
        later = [frame(session="cached", steps=2, shade=s, prompt="a lighthouse, (stormy sea:1.2)") for s in (1, 2)]
        for item in later:
            client.send(item)
            until_terminal(client, {item.id})
    finally:
        hook.remove()
    assert calls == []
    assert server.generator.conditioner.cache.hits > hits
