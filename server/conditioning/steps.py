"""Which denoising steps a control or a reference picture acts at, and the step a job's pipeline is at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def covers(step: int, steps: int, start: float, end: float) -> bool:
    """Whether `step` of `steps` lies wholly within the share [start, end] of the steps (diffusers'
    `controlnet_keep`): a step that ends past `end` or begins before `start` is left out."""
    return steps > 0 and not (step / steps < start or (step + 1) / steps > end)


@dataclass
class StepCounter:
    """The step the pipeline is at: 0 before the first, then set by `on_step_end` (a `callback_on_step_end`)."""

    step: int = field(default=0, kw_only=True)

    def on_step_end(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        self.step = step + 1
        return tensors
