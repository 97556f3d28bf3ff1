"""1 000 tiny jobs in a row against one server process: does its resident memory keep growing?

Jobs alternate txt2img and img2img at 64x64 with previews, on the tiny random-weight SD1.5 model,
one denoising step each. The server's resident set size (RSS) is read after every job. The first
100 jobs warm up (allocator pools, lazily built pipelines); growth is measured from job 100 to
the end and must stay under 5 %.

`python -m bench.soak` writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench.report import result_path, write_report
from shared.client import Client
from shared.messages import Generate, Image

LIMIT = 0.05


def job(index: int) -> Generate:
    common = {"id": f"soak-{index}", "model": "tiny-sd15", "prompt": f"a red circle, variation {index}",
              "width": 64, "height": 64, "seed": index, "preview": True}
    if index % 2:
        pixels = Image(width=64, height=64, format="rgba8", data=bytes((index % 256, 80, 160, 255)) * 4096)
        return Generate(mode="img2img", image=pixels, strength=0.5, steps=2, **common)
    return Generate(mode="txt2img", steps=1, **common)


def median_mb(samples: list[int]) -> float:
    return round(statistics.median(samples) / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--warm-up", type=int, default=100)
    parser.add_argument("--out", type=Path, default=result_path("soak"))
    args = parser.parse_args(argv)

    from testing.processes import ServerProcess

    rss: list[int] = []
    seconds: list[float] = []
    with ServerProcess(threads=1) as server, Client(server.url, name="soak") as client:
        started = time.monotonic()
        for index in range(args.jobs):
            began = time.monotonic()
            client.generate(job(index), timeout=120)
            seconds.append(time.monotonic() - began)
            rss.append(server.rss())
            if (index + 1) % 100 == 0:
                print(f"{index + 1} jobs, RSS {rss[-1] / 2**20:.1f} MiB", file=sys.stderr)
        total = time.monotonic() - started
        logged = len(server.job_lines())
    # Medians of ten jobs on each side smooth out the allocator's step-wise growth and return.
    at_warm_up = median_mb(rss[args.warm_up - 10:args.warm_up])
    at_end = median_mb(rss[-10:])
    growth = (at_end - at_warm_up) / at_warm_up
    report = {
        "settings": {"jobs": args.jobs, "warm_up_jobs": args.warm_up, "model": "tiny-sd15 (random weights)",
                     "size": "64x64", "modes": "txt2img 1 step / img2img 2 steps at strength 0.5, previews on"},
        "rss_mb": {"after_first_job": round(rss[0] / 2**20, 1), "at_warm_up": at_warm_up, "at_end": at_end,
                   "max": round(max(rss) / 2**20, 1),
                   "every_100_jobs": [round(rss[i] / 2**20, 1) for i in range(99, len(rss), 100)]},
        "growth_after_warm_up": round(growth, 4),
        "limit": LIMIT,
        "job_s": {"p50": round(statistics.median(seconds), 4),
                  "p99": round(sorted(seconds)[int(0.99 * (len(seconds) - 1))], 4)},
        "total_s": round(total, 1),
        "job_log_lines": logged,
    }
    write_report(report, args.out, show=True)
    return 0 if growth < LIMIT and logged == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
