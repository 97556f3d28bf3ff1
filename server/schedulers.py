"""Sampler names artists know, mapped to diffusers schedulers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import diffusers

from shared import errors
from shared.errors import ProtocolError


@dataclass(frozen=True)
class Sampler:
    label: str
    scheduler: str  # a diffusers scheduler class name
    options: dict[str, Any] = field(default_factory=dict)


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler("Euler", "EulerDiscreteScheduler"),
    "euler_a": Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
    "dpmpp_2m": Sampler("DPM++ 2M", "DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": Sampler("DPM++ 2M Karras", "DPMSolverMultistepScheduler",
                               {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpmpp_2m_sde": Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "ddim": Sampler("DDIM", "DDIMScheduler"),
    "unipc": Sampler("UniPC", "UniPCMultistepScheduler"),
    "heun": Sampler("Heun", "HeunDiscreteScheduler"),
    "lcm": Sampler("LCM", "LCMScheduler"),
    "tcd": Sampler("TCD", "TCDScheduler"),
    # Few-step live refinement: Euler with trailing timestep spacing keeps 4-8 steps sharp.
    "euler_trailing": Sampler("Euler (trailing)", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
}


def labels() -> dict[str, str]:
    return {name: sampler.label for name, sampler in SAMPLERS.items()}


def check_name(name: str) -> Sampler:
    sampler = SAMPLERS.get(name)
    if sampler is None:
        known = ", ".join(SAMPLERS)
        raise ProtocolError(errors.BAD_REQUEST, f"unknown scheduler {name[:64]!r}; known: {known}", "scheduler")
    return sampler


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler per job: schedulers keep state between steps."""
    sampler = check_name(name)
    cls = getattr(diffusers, sampler.scheduler)
    return cls.from_config(base_config, **sampler.options)
