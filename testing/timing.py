"""The CPU time one call takes on its own thread, for tests that catch hangs and quadratic blow-ups:
wall time on a shared machine varies with its load, and a full garbage collection of a test
session's objects alone can take half a second, so collection is held off while the call runs."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def thread_seconds(call: Callable[[], T]) -> tuple[T, float]:
    """`call()`'s result and the CPU seconds its thread spent on it."""
    gc.collect()
    gc.disable()
    try:
        started = time.thread_time()
        result = call()
        return result, time.thread_time() - started
    finally:
        gc.enable()
