"""The server's worker thread allocates from glibc's one main malloc arena (server/allocator.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from testing.processes import ROOT

# A thread's first malloc gets an arena of its own unless the arenas are limited; malloc_stats
# lists each arena on stderr.
PROGRAM = textwrap.dedent("""
    import ctypes, sys, threading
    from server import allocator
    if sys.argv[1] == "one":
        assert allocator.use_one_arena()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    worker = threading.Thread(target=lambda: libc.malloc(50_000))
    worker.start()
    worker.join()
    libc.malloc_stats()
""")


def arenas(setting: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROGRAM, setting], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=60)
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_a_worker_thread_allocates_from_the_main_arena():
    assert arenas("default") == 2
    assert arenas("one") == 1
