"""The C allocator, set up for inference on the CPU.

glibc gives each thread that allocates a malloc arena of its own (up to 8 per core), and gives back
and maps again the memory of its arenas as a job's tensors come and go. A job runs on the
worker thread, so it paid that where a direct diffusers call on the main thread does not. Measured on
the served process, SD1.5-sized txt2img at 256 px in 2 steps on one thread: 1.1 s of system time in
12.0 s of CPU time; with one arena none, and 10.3 s in all (bench/overhead.py compares served and
direct). The server has two busy threads (the event loop and the worker), so one arena costs it no
waiting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("underpaint.allocator")

M_ARENA_MAX = -8  # glibc's mallopt parameter


def use_one_arena() -> bool:
    """Limit glibc to one malloc arena; call it before the worker thread first allocates. False where
    the C library is not glibc (macOS, Windows, musl): nothing to change there."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    done = bool(mallopt is not None and mallopt(M_ARENA_MAX, 1))
    log.debug("one malloc arena: %s", done)
    return done
