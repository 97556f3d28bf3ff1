"""Reading a small file a person put somewhere (a model's settings file, a style): only a regular
file, at most a given size, never waiting on a FIFO that happens to carry the expected name."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class Unreadable(Exception):
    """The file is there but cannot be used; `str()` says why, for a log line."""


def is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def read_small_file(path: Path, limit: int) -> bytes | None:
    """The bytes of the regular file at `path`; None when there is none (missing, a folder, a FIFO,
    a device); Unreadable when it cannot be read or is larger than `limit` bytes."""
    if not is_regular_file(path):
        return None
    try:
        # O_NONBLOCK: should the file have been replaced by a FIFO since it was looked at, opening it
        # must not wait for a writer.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return None
            raw = file.read(limit + 1)
    except OSError as exc:
        raise Unreadable(exc.strerror or type(exc).__name__) from None
    if len(raw) > limit:
        raise Unreadable(f"larger than {limit // 1024} KiB")
    return raw
