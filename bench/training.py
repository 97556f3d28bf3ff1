"""What a training running in the background costs a painting job, on the demo model.

A generate (128², 20 steps, the demo model's defaults) is timed from sending it to its result:
  (a) with nothing else running (`plain`);
  (b) while a LoRA trains on the same worker (`during_training`): the generate waits for the current
      optimizer step to end, runs, and the training goes on after it.
Rounds of (a) then (b) alternate, so a machine whose load changes weighs on both alike; the medians
are compared. Each time is taken twice: wall-clock, and in CPU seconds of this process (the server
runs in it), which other work on a shared machine does not stretch; the ratios are given in both.
The ratio (b) ÷ (a) is the cost as the artist feels it; (b) ÷ (a + one training step) tells whether
anything beyond that one step is lost (1.0: nothing). One training step is timed from the training's
own progress messages. Everything runs in one process, in one run, on this machine's CPU threads.

Run: python -m bench.training [--repeats N] [--kind lora|embedding] → bench/results/training.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch

from bench.report import write_report
from server.config import ServerConfig
from shared.client import Client
from shared.messages import Cancel, Cancelled, Generate, Progress
from testing.serving import running_server, url
from testing.training import pictures, train_request

Timing = tuple[float, float]  # (wall-clock seconds, CPU seconds of this process)


def clocks() -> Timing:
    return time.perf_counter(), time.process_time()


def since(start: Timing, count: int = 1) -> Timing:
    wall, cpu = clocks()
    return (wall - start[0]) / count, (cpu - start[1]) / count


def generate(client: Client, model: str) -> Timing:
    request = Generate(id=uuid.uuid4().hex, mode="txt2img", model=model, prompt="a red circle on a blue background",
                       width=128, height=128, steps=20, cfg_scale=3, seed=1)
    started = clocks()
    client.generate(request, timeout=600)
    return since(started)


def step_seconds(client: Client, job_id: str, steps: int) -> Timing:
    """Time per optimizer step over the next `steps` steps of the training, from its progress."""
    first: tuple[Timing, int] | None = None
    for message in client.messages(timeout=600):
        if isinstance(message, Progress) and message.id == job_id:
            if first is None:
                first = (clocks(), message.step)
            elif message.step - first[1] >= steps:
                return since(first[0], message.step - first[1])
    raise AssertionError("unreachable")


def during_training(painter: Client, trainer: Client, demo: str,
                    args: argparse.Namespace) -> tuple[list[Timing], list[Timing]]:
    """Generates timed while a training runs, and the training's step times around them."""
    # The demo model's own defaults (server/training/defaults.py), without sample pictures.
    request = train_request(kind=args.kind, model=demo, images=pictures(8), steps=100_000, resolution=None,
                            learning_rate=None, sample_every=0, checkpoint_every=100_000)
    trainer.send(request)
    steps = [step_seconds(trainer, request.id, 5)]
    during = []
    for _ in range(args.repeats):
        during.append(generate(painter, demo))
        steps.append(step_seconds(trainer, request.id, 3))  # the training runs again
    trainer.send(Cancel(id=request.id))
    while not (isinstance(message := trainer.receive(timeout=600), Cancelled) and message.id == request.id):
        pass
    return during, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="generates of each kind in a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kind", choices=("lora", "embedding"), default="lora")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trained = Path(tmp) / "trained"
        trained.mkdir()
        with running_server(ServerConfig(models=[trained], outputs=Path(tmp) / "out")) as server, \
                Client(url(server), name="painter") as painter, Client(url(server), name="trainer") as trainer:
            demo = server.registry.checkpoints()[0].name
            generate(painter, demo)  # loads the model
            plain: list[Timing] = []
            during: list[Timing] = []
            steps_s: list[Timing] = []
            for _ in range(args.rounds):
                plain += [generate(painter, demo) for _ in range(args.repeats)]
                round_during, round_steps = during_training(painter, trainer, demo, args)
                during += round_during
                steps_s += round_steps
    report = {
        "threads": torch.get_num_threads(),
        "model": demo,
        "kind": args.kind,
        "generate": "128x128, 20 steps, cfg 3",
        "training": "demo model defaults (server/training/defaults.py), 8 pictures, no samples",
    }
    for index, clock in enumerate(("wall", "cpu")):
        plain_s = statistics.median(t[index] for t in plain)
        during_s = statistics.median(t[index] for t in during)
        step_s = statistics.median(t[index] for t in steps_s)
        report[clock] = {
            "plain_s": [round(t[index], 3) for t in plain],
            "during_training_s": [round(t[index], 3) for t in during],
            "training_step_s": [round(t[index], 3) for t in steps_s],
            "median_plain_s": round(plain_s, 3),
            "median_during_training_s": round(during_s, 3),
            "median_training_step_s": round(step_s, 3),
            "ratio_during_over_plain": round(during_s / plain_s, 3),
            "ratio_during_over_plain_plus_one_step": round(during_s / (plain_s + step_s), 3),
        }
    write_report(report, "training", show=True)


if __name__ == "__main__":
    main()
