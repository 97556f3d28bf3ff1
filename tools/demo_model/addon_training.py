"""The training loop of the demo model's add-ons (its scribble ControlNet, its reference adapter):
the demo UNet and text encoder frozen, the add-on learning the UNet's own objective (v-prediction on
its noise schedule) on scenes encoded once by the demo VAE."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from .components import make_training_scheduler
from .data import Scene
from .train import cosine_rate


class LoopSettings(Protocol):
    seed: int
    steps: int
    lr: float
    warmup: int
    batches: tuple[tuple[int, int], ...]  # side -> batch
    checkpoint_every: int
    eval_every: int


@dataclass(frozen=True)
class Draw:
    """One step's batch: scenes of one side, and the step's own random source for whatever else the
    add-on draws (sketches, references, captions)."""

    side: int
    scenes: list[Scene]
    rng: random.Random


# (batch, noisy latents, timesteps) -> the UNet's prediction with the add-on
Predict = Callable[[Draw, torch.Tensor, torch.Tensor], torch.Tensor]


def save_state(state: dict, path: Path) -> None:
    """Written beside and moved in, so a run stopped while saving leaves the last checkpoint whole."""
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def resume(net: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path, log: logging.Logger) -> tuple[int, list]:
    """Loads the checkpoint `save_state` wrote, if there is one: the step to go on from, and the curve."""
    if not path.exists():
        return 0, []
    state = torch.load(path, weights_only=True)
    net.load_state_dict(state["net"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resumed at step %d", state["step"])
    return state["step"], state["curve"]


def train_steps(data: dict[int, dict], settings: LoopSettings, params: list[torch.nn.Parameter],
                optimizer: torch.optim.Optimizer, predict: Predict, quick_check: Callable[[], float],
                save: Callable[[int, list], None], step: int, curve: list, log: logging.Logger) -> None:
    """Trains from `step` to settings.steps, batches alternating between the sides of `data`; every
    eval_every steps appends [step, quick_check(), seconds] to `curve`, and saves every
    checkpoint_every steps and at the end."""
    noise_schedule = make_training_scheduler()
    batches = dict(settings.batches)
    sides = sorted(data)
    start = time.monotonic()
    while step < settings.steps:
        # Seeded per step, so a resumed run draws the same batches as an uninterrupted one.
        rng = random.Random(settings.seed * 7919 + step)
        generator = torch.Generator().manual_seed(settings.seed * 7919 + step)
        side = sides[step % len(sides)]
        index = torch.randint(len(data[side]["scenes"]), (batches[side],), generator=generator).tolist()
        x0 = data[side]["latents"][index]
        noise = torch.randn(x0.shape, generator=generator)
        timesteps = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = noise_schedule.add_noise(x0, noise, timesteps)
        rate = cosine_rate(step, settings.steps, settings.lr, settings.warmup)
        for group in optimizer.param_groups:
            group["lr"] = rate
        prediction = predict(Draw(side, [data[side]["scenes"][i] for i in index], rng), noisy, timesteps)
        loss = F.mse_loss(prediction, noise_schedule.get_velocity(x0, noise, timesteps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        if step % 25 == 0:
            log.info("step %d/%d side %d loss %.4f lr %.2e (%.0f s)", step, settings.steps, side, loss.item(), rate,
                     time.monotonic() - start)
        if step % settings.eval_every == 0:
            curve.append([step, quick_check(), round(time.monotonic() - start)])
            log.info("step %d: quick check %.0f%%", step, 100 * curve[-1][1])
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            save(step, curve)
