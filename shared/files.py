"""Reading a small file a person put somewhere (a model's settings file, a style): only a regular
file, at most a given size, never waiting on a FIFO that happens to carry the expected name."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO


class Unreadable(Exception):
    """The file is there but cannot be used; `str()` says why, for a log line."""


class NotRegular(Unreadable):
    """A FIFO, socket, device or folder where a file was expected."""


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
        with open_regular(path) as file:
            raw = file.read(limit + 1)
    except NotRegular:
        return None  # replaced by a FIFO or the like since it was looked at
    except OSError as exc:
        raise Unreadable(exc.strerror or type(exc).__name__) from None
    if len(raw) > limit:
        raise Unreadable(f"larger than {limit // 1024} KiB")
    return raw


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading in binary, if it is a regular file; NotRegular otherwise."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotRegular("not a regular file")
        # Reads of a regular file never return early for lack of data, so blocking mode is not needed.
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
