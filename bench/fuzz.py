"""Fuzzing the protocol decoder and a running server with hostile frames (testing/frames.py).

Every input must end in a decoded message or a `ProtocolError` with a known code; anything else is
a crash. Run `python -m bench.fuzz` for the long run (>= 100 000 inputs), which also sends a share of
the rejected frames through a real server and checks each reply is `error` with the same code;
it writes bench/results/fuzz.json. tests/test_fuzz.py runs the same checks for a few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.report import result_path, write_report
from shared import codec
from shared.errors import ProtocolError
from testing.frames import check_frame, mutate, seed_frames, structured_frames


@dataclasses.dataclass
class Tally:
    """What a fuzz run saw."""

    inputs: int = 0
    accepted: int = 0
    crashes: list[str] = dataclasses.field(default_factory=list)
    codes: Counter[str] = dataclasses.field(default_factory=Counter)
    slowest_s: float = 0.0
    slowest_frame: bytes = b""
    most_cpu_s: float = 0.0

    def run(self, frame: bytes) -> ProtocolError | Any | None:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            outcome = check_frame(frame)
        except Exception as exc:  # a crash: anything but a decoded message or a ProtocolError
            self.crashes.append(f"{type(exc).__name__}: {exc} <- {frame[:80]!r}")
            outcome = None
        elapsed = time.perf_counter() - started
        self.most_cpu_s = max(self.most_cpu_s, time.thread_time() - cpu)
        if elapsed > self.slowest_s:
            self.slowest_s, self.slowest_frame = elapsed, frame
        self.inputs += 1
        if isinstance(outcome, ProtocolError):
            self.codes[outcome.code] += 1
        elif outcome is not None:
            self.accepted += 1
        return outcome

    def summary(self) -> dict[str, Any]:
        # The slowest input is timed again: on a shared machine one slow reading may be the scheduler.
        again = []
        for _ in range(5):
            started = time.perf_counter()
            try:
                check_frame(self.slowest_frame)
            except Exception:  # noqa: BLE001 - counted as a crash above already
                pass
            again.append(time.perf_counter() - started)
        return {"inputs": self.inputs, "decoded": self.accepted, "rejected": dict(self.codes.most_common()),
                "crashes": len(self.crashes), "first_crashes": self.crashes[:5],
                "slowest_input_s": round(self.slowest_s, 4), "slowest_input_bytes": len(self.slowest_frame),
                "slowest_input_timed_again_s": round(min(again), 4),
                "most_cpu_for_one_input_s": round(self.most_cpu_s, 4)}


# --- the long run ------------------------------------------------------------------------------------------


def fuzz_structured(count: int, tally: Tally, seed: int) -> list[bytes]:
    """`count` structured frames through the decoder; returns the ones it rejected (for the server run)."""
    from hypothesis import HealthCheck, given, settings

    rejected: list[bytes] = []

    @settings(max_examples=count, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(structured_frames)
    def one(frame: bytes) -> None:
        if isinstance(tally.run(frame), ProtocolError) and len(rejected) < 100_000:
            rejected.append(frame)

    random.seed(seed)
    one()
    return rejected


def fuzz_mutations(count: int, tally: Tally, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    seeds = seed_frames()
    rejected = []
    for _ in range(count):
        frame = mutate(rng.choice(seeds), rng, seeds)
        if isinstance(tally.run(frame), ProtocolError):
            rejected.append(frame)
    return rejected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structured", type=int, default=30_000, help="hypothesis-built frames")
    parser.add_argument("--mutations", type=int, default=100_000, help="mutated valid frames")
    parser.add_argument("--server-frames", type=int, default=5_000, help="rejected frames sent to a real server")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=result_path("fuzz"))
    args = parser.parse_args(argv)

    from testing.processes import ServerProcess

    report: dict[str, Any] = {"seed": args.seed}
    started = time.monotonic()
    structured, mutated = Tally(), Tally()
    rejected = fuzz_structured(args.structured, structured, args.seed)
    report["structured"] = structured.summary()
    print("structured:", report["structured"], file=sys.stderr)
    rejected += fuzz_mutations(args.mutations, mutated, args.seed)
    report["mutations"] = mutated.summary()
    print("mutations:", report["mutations"], file=sys.stderr)
    report["decoder_inputs"] = structured.inputs + mutated.inputs
    report["decoder_seconds"] = round(time.monotonic() - started, 1)

    rng = random.Random(args.seed)
    frames = rng.sample(rejected, min(args.server_frames, len(rejected)))
    with ServerProcess(threads=2) as server:
        report["server"] = server_fuzz(server, frames)
    print("server:", report["server"], file=sys.stderr)
    report["crashes"] = len(structured.crashes) + len(mutated.crashes) + report["server"]["mismatches"]
    write_report(report, args.out)
    return 1 if report["crashes"] else 0


def server_fuzz(server: Any, frames: list[bytes]) -> dict[str, Any]:
    """Send rejected frames through one real connection; each must get an `error` with the same code."""
    from shared.client import Client
    from shared.messages import Error

    mismatches: list[str] = []
    rss: list[int] = []
    started = time.monotonic()
    with Client(server.url, name="fuzz") as client:
        rss.append(server.rss())
        for index, frame in enumerate(frames, start=1):
            expected = _expected(frame)
            client.send_raw(frame)
            reply = client.receive(timeout=30)
            if not isinstance(reply, Error) or (reply.code, reply.field) != (expected.code, expected.field):
                mismatches.append(f"{frame[:60]!r}: expected {expected}, got {reply}")
            if index % 500 == 0:
                rss.append(server.rss())
        still_up = bool(client.models())
        rss.append(server.rss())
    return {"frames": len(frames), "mismatches": len(mismatches), "first_mismatches": mismatches[:5],
            "seconds": round(time.monotonic() - started, 1), "still_answers": still_up,
            "rss_mb": {"start": round(rss[0] / 2**20, 1), "end": round(rss[-1] / 2**20, 1),
                       "max": round(max(rss) / 2**20, 1)}}


def _expected(frame: bytes) -> ProtocolError:
    try:
        codec.decode_client(frame)
    except ProtocolError as exc:
        return exc
    raise ValueError("this frame decodes; only rejected frames are sent to the server")


if __name__ == "__main__":
    sys.exit(main())
