"""Sampler names artists know, mapped to diffusers schedulers, with a noise schedule.

`noise_schedule` picks the sigma spacing: the sampler's own (`default`), `karras` or `exponential`;
samplers whose diffusers scheduler has no sigma choice (Euler a, DDIM, LCM, TCD) take `default` only.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import diffusers

from ..errors import BadInput, Unsupported

# noise_schedule -> the diffusers scheduler flag that selects it.
SCHEDULE_FLAGS = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas"}
SCHEDULE_LABELS = {"karras": "Karras", "exponential": "Exponential"}


@dataclass(frozen=True)
class Sampler:
    label: str
    scheduler: str  # a diffusers scheduler class name
    options: dict[str, Any] = field(default_factory=dict)
    schedule: str = "default"  # the noise schedule when the request asks for `default`


_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}

SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler("Euler", "EulerDiscreteScheduler"),
    "euler_a": Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
    "dpmpp_2m": Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", _DPMPP_2M),
    # The name A1111 used before schedules were a separate choice; kept for scripts that send it.
    "dpmpp_2m_karras": Sampler("DPM++ 2M Karras", "DPMSolverMultistepScheduler", _DPMPP_2M, schedule="karras"),
    "dpmpp_2m_sde": Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_sde": Sampler("DPM++ SDE", "DPMSolverSDEScheduler"),
    "ddim": Sampler("DDIM", "DDIMScheduler"),
    "unipc": Sampler("UniPC", "UniPCMultistepScheduler"),
    "lms": Sampler("LMS", "LMSDiscreteScheduler"),
    "heun": Sampler("Heun", "HeunDiscreteScheduler"),
    "lcm": Sampler("LCM", "LCMScheduler"),
    "tcd": Sampler("TCD", "TCDScheduler"),
    # Few-step live refinement: Euler with trailing timestep spacing keeps 4-8 steps sharp.
    "euler_trailing": Sampler("Euler (trailing)", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
}


def labels() -> dict[str, str]:
    return {name: sampler.label for name, sampler in SAMPLERS.items()}


def label(name: str, noise_schedule: str = "default") -> str:
    """The display name with its schedule, as A1111 writes it ("DPM++ 2M Karras")."""
    sampler = SAMPLERS[name]
    if noise_schedule == "default" or noise_schedule == sampler.schedule:
        return sampler.label
    return f"{sampler.label} {SCHEDULE_LABELS[noise_schedule]}"


def check_name(name: str) -> Sampler:
    sampler = SAMPLERS.get(name)
    if sampler is None:
        known = ", ".join(SAMPLERS)
        raise BadInput(f"unknown scheduler {name[:64]!r}; known: {known}", "scheduler")
    return sampler


def check(name: str, noise_schedule: str = "default") -> Sampler:
    """The sampler, if it exists and can follow `noise_schedule`."""
    sampler = check_name(name)
    if noise_schedule != "default" and not takes(sampler, SCHEDULE_FLAGS[noise_schedule]):
        able = ", ".join(n for n, s in SAMPLERS.items() if takes(s, SCHEDULE_FLAGS[noise_schedule]))
        raise Unsupported(f"{sampler.label} has no {noise_schedule} noise schedule; samplers with one: {able}",
                          "noise_schedule")
    return sampler


def takes(sampler: Sampler, option: str) -> bool:
    return option in inspect.signature(getattr(diffusers, sampler.scheduler).__init__).parameters


def make_scheduler(name: str, base_config: Any, noise_schedule: str = "default",
                   seeds: Sequence[int] = ()) -> Any:
    """A fresh scheduler per job (schedulers keep state between steps). `seeds`, one per image,
    seed the Brownian noise of the SDE samplers that draw it themselves, so their results reproduce."""
    sampler = check(name, noise_schedule)
    options = dict(sampler.options)
    schedule = sampler.schedule if noise_schedule == "default" else noise_schedule
    for kind, flag in SCHEDULE_FLAGS.items():
        if takes(sampler, flag):
            options[flag] = schedule == kind
    if seeds and takes(sampler, "noise_sampler_seed"):
        options["noise_sampler_seed"] = list(seeds)
    return getattr(diffusers, sampler.scheduler).from_config(base_config, **options)
