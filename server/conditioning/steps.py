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
    """Where the running pipeline call is, from its `callback_on_step_end`: the step it is at, and how many it
    runs. A job may call several pipelines one after another (full detail's refine after the native picture):
    after the last step of one the count starts again, and until a step of the next has ended its number of
    steps is the job's pipeline's."""

    step: int = field(default=0, kw_only=True)
    steps: int | None = field(default=None, kw_only=True)

    def on_step_end(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = pipe.num_timesteps
        self.step, self.steps = (0, None) if step + 1 >= total else (step + 1, total)
        return tensors

    def total(self, pipe: Any) -> int:
        """The steps of the running call; `pipe`'s (the job's pipeline) before one of its steps has ended."""
        return self.steps if self.steps is not None else getattr(pipe, "num_timesteps", 0)
