"""Which worker runs a waiting job: the rule alone, as a pure function of what the queue knows.

Each worker runs one job at a time and the queue holds every waiting job, so a worker's load is its
running job: the least loaded workers are the free ones. Among them, one that already holds the
job's model is taken first (no load), then one holding the fewest models (it evicts least), then the
one idle longest. A live session's frames go to the worker that ran its first frame (its prompt
and control embeddings are cached there) while that worker is up, waiting for it when it is busy.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A worker that is up and has the job's model."""

    index: int
    free: bool
    loaded: Collection[str]
    idle_since: float  # when it last finished a job (monotonic), for the tie-break


def choose(model: str, home: int | None, candidates: Sequence[Candidate]) -> int | None:
    """The worker to start the job on now, or None to leave it waiting."""
    if home is not None:
        at_home = next((c for c in candidates if c.index == home), None)
        if at_home is not None:
            return home if at_home.free else None
    free = [c for c in candidates if c.free]
    if not free:
        return None
    best = min(free, key=lambda c: (model not in c.loaded, len(c.loaded), c.idle_since, c.index))
    return best.index
