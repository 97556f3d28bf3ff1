"""What a training running in the background costs a painting job, on the demo model.

A generate (128², 20 steps, the demo model's defaults) is timed from sending it to its result:
  (a) with nothing else running, before and after the training (`plain`);
  (b) while a LoRA trains on the same worker (`during_training`): the generate waits for the current
      optimizer step to end, runs, and the training goes on after it.
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


def generate(client: Client, model: str) -> float:
    request = Generate(id=uuid.uuid4().hex, mode="txt2img", model=model, prompt="a red circle on a blue background",
                       width=128, height=128, steps=20, cfg_scale=3, seed=1)
    started = time.perf_counter()
    client.generate(request, timeout=600)
    return time.perf_counter() - started


def step_seconds(client: Client, job_id: str, steps: int) -> tuple[float, int]:
    """Seconds per optimizer step over the next `steps` steps of the training, from its progress."""
    first: tuple[float, int] | None = None
    for message in client.messages(timeout=600):
        if isinstance(message, Progress) and message.id == job_id:
            now = time.perf_counter()
            if first is None:
                first = (now, message.step)
            elif message.step - first[1] >= steps:
                return (now - first[0]) / (message.step - first[1]), message.step
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kind", choices=("lora", "embedding"), default="lora")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trained = Path(tmp) / "trained"
        trained.mkdir()
        with running_server(ServerConfig(models=[trained], outputs=Path(tmp) / "out")) as server, \
                Client(url(server), name="painter") as painter, Client(url(server), name="trainer") as trainer:
            demo = server.registry.checkpoints()[0].name
            generate(painter, demo)  # loads the model
            plain = [generate(painter, demo) for _ in range(args.repeats)]
            # The demo model's own defaults (server/training/defaults.py), without sample pictures.
            request = train_request(kind=args.kind, model=demo, images=pictures(8), steps=100_000, resolution=None,
                                    learning_rate=None, sample_every=0, checkpoint_every=100_000)
            trainer.send(request)
            step_s, _ = step_seconds(trainer, request.id, 10)
            during = []
            for _ in range(args.repeats):
                during.append(generate(painter, demo))
                step_seconds(trainer, request.id, 2)  # the training is running again
            after_s, last_step = step_seconds(trainer, request.id, 10)
            trainer.send(Cancel(id=request.id))
            while not (isinstance(m := trainer.receive(timeout=600), Cancelled) and m.id == request.id):
                pass
            plain += [generate(painter, demo) for _ in range(args.repeats)]
    plain_s, during_s = statistics.median(plain), statistics.median(during)
    one_step = statistics.mean([step_s, after_s])
    report = {
        "threads": torch.get_num_threads(),
        "model": demo,
        "kind": args.kind,
        "generate": "128x128, 20 steps, cfg 3",
        "plain_s": [round(x, 3) for x in plain],
        "during_training_s": [round(x, 3) for x in during],
        "training_step_s": round(one_step, 3),
        "training_steps_done": last_step,
        "median_plain_s": round(plain_s, 3),
        "median_during_training_s": round(during_s, 3),
        "ratio_during_over_plain": round(during_s / plain_s, 3),
        "ratio_during_over_plain_plus_one_step": round(during_s / (plain_s + one_step), 3),
    }
    write_report(report, "training", show=True)


if __name__ == "__main__":
    main()
