"""Hostile frames: the decoder never crashes or hangs, and a real server answers each with `error`.

The long run (>= 100 000 inputs) is `python -m bench.fuzz`; these are its checks for a few seconds.
"""

from __future__ import annotations

import random
import time
import tracemalloc

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.config import ServerConfig
from shared.client import Client
from shared.errors import ProtocolError
from shared.messages import Error
from testing.frames import check_frame, mutate, seed_frames, structured_frames
from testing.serving import nothing_queued, running_server, url
from testing.timing import thread_seconds

SEEDS = seed_frames()
# Generous: a frame takes milliseconds; this only catches hangs and quadratic blow-ups.
SLOW = 1.0
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def timed_check(frame: bytes):
    outcome, seconds = thread_seconds(lambda: check_frame(frame))
    assert seconds < SLOW, f"{len(frame)}-byte frame took too long"
    return outcome


@FUZZ
@given(structured_frames)
def test_structured_frames_decode_or_get_a_coded_error(frame):
    timed_check(frame)


@FUZZ
@given(st.sampled_from(SEEDS), st.randoms(use_true_random=False))
def test_mutated_frames_decode_or_get_a_coded_error(frame, rng):
    timed_check(mutate(frame, rng, SEEDS))


def test_every_seed_frame_is_valid():
    assert all(not isinstance(timed_check(frame), ProtocolError) for frame in SEEDS)


def generate_with(value: bytes) -> bytes:
    """A generate map whose `x` field's value is the raw msgpack `value` (unknown fields are skipped,
    so only the decoder's own limits stop it)."""
    return b"\x82\xa4type\xa8generate\xa1x" + value


NESTED_EMPTY = b"\xdd" + (15_000).to_bytes(4, "big") + (b"\xdc\x04\x00" + b"\x90" * 1024) * 15_000
BOMBS = [
    ("nested empty lists, 15 MB", generate_with(NESTED_EMPTY), "too_large"),
    ("16 million nils", generate_with(b"\xdd" + (16_000_000).to_bytes(4, "big") + b"\xc0" * 16_000_000),
     "too_large"),
    ("map claiming 4 billion entries", generate_with(b"\xdf\xff\xff\xff\xff"), "too_large"),
    ("string claiming 4 GB", generate_with(b"\xdb\xff\xff\xff\xff"), "bad_request"),
    ("2 MB string", generate_with(b"\xdb" + (2 * 2**20).to_bytes(4, "big") + b"a" * 2 * 2**20), "too_large"),
    ("100 000 levels deep", generate_with(b"\x91" * 100_000 + b"\x00"), "bad_request"),
    ("17 levels deep", msgpack.packb({"type": "models", "x": [[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]}), "bad_request"),
]


@pytest.mark.parametrize(("frame", "code"), [(f, c) for _, f, c in BOMBS], ids=[name for name, _, _ in BOMBS])
def test_frames_built_to_exhaust_memory_or_time_are_refused_cheaply(frame, code):
    tracemalloc.start()
    try:
        outcome = timed_check(frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(outcome, ProtocolError) and outcome.code == code
    assert peak < 64 * 2**20, f"decoding took {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize(("job_id", "echoed"), [("job-7", "job-7"), ("x" * 128, "x" * 128), ("x" * 129, None),
                                                (7, None)])
def test_only_valid_ids_are_echoed_in_errors(job_id, echoed):
    frame = msgpack.packb({"type": "generate", "id": job_id, "mode": "nope"})
    error = timed_check(frame)
    assert error.id == echoed


def rejected_frames(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    frames = [frame for _, frame, _ in BOMBS]
    while len(frames) < count:
        frame = mutate(rng.choice(SEEDS), rng, SEEDS)
        if isinstance(check_frame(frame), ProtocolError):
            frames.append(frame)
    return frames


def test_a_server_answers_every_rejected_frame_with_the_same_error_and_stays_up(models_dir, tmp_path):
    frames = rejected_frames(300, seed=3)
    with running_server(ServerConfig(models=[models_dir], outputs=tmp_path)) as server:
        with Client(url(server), name="fuzz") as fuzzer, Client(url(server), name="bystander") as bystander:
            for frame in frames:
                expected = check_frame(frame)
                fuzzer.send_raw(frame)
                reply = fuzzer.receive(timeout=30)
                assert isinstance(reply, Error), reply
                assert (reply.code, reply.field, reply.id) == (expected.code, expected.field, expected.id)
            assert fuzzer.models() and bystander.models()
        # Nothing was queued by garbage, and nothing stays behind for closed connections.
        assert nothing_queued(server)
        deadline = time.monotonic() + 10
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.connections
