"""What a scan reads of a model file or folder: a safetensors header, a small JSON config.

Only regular files are opened, and without blocking on the open: a FIFO, socket or device named
`x.safetensors` (or `config.json`) would otherwise hold the scan until something writes to it, or
stream endlessly. Every read has a size cap decided before reading, so a file claiming a 1 GB
header costs nothing. Tensor data is never read here.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

# Real headers: about 300 KiB for a whole SDXL checkpoint (2 500 tensors), a few MiB for a LoRA that
# carries its training tags. 16 MiB leaves room for those and refuses a header of a million entries,
# which took seconds and gigabytes to parse on every rescan.
MAX_HEADER = 16 * 1024 * 1024
MAX_CONFIG = 1024 * 1024
METADATA = "__metadata__"


class UnreadableFile(ValueError):
    """A file the scan will not use; the message says why, for the server's log."""


class NotRegularFile(UnreadableFile):
    """A FIFO, socket, device or the like where a model file was expected."""


class HeaderTooLarge(UnreadableFile):
    """A safetensors header over MAX_HEADER."""


def read_small(path: Path, limit: int) -> bytes:
    """All of a regular file of at most `limit` bytes."""
    with _open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            raise UnreadableFile(f"{size} bytes, more than the {limit} read of such a file")
        return file.read(limit)


def read_json(path: Path, limit: int = MAX_CONFIG) -> dict[str, Any]:
    data = json.loads(read_small(path, limit))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def safetensors_header(path: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """A safetensors file's tensor shapes by name and its metadata, checked the way the format
    defines them: the header is a JSON map, the tensors' byte ranges fill the rest of the file."""
    with _open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        prefix = file.read(8)
        if len(prefix) < 8:
            raise UnreadableFile("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if 8 + length > size:
            raise UnreadableFile("the header runs past the end of the file")
        if length > MAX_HEADER:
            raise HeaderTooLarge(f"a {length}-byte header, more than the {MAX_HEADER} allowed")
        header = json.loads(file.read(length))
    if not isinstance(header, dict):
        raise UnreadableFile("the header is not a JSON map")
    metadata = header.pop(METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise UnreadableFile("its metadata is not a map of strings")
    shapes, end = {}, 0
    for name, tensor in header.items():
        shape, offsets = _tensor(tensor)
        if shape is None:
            raise UnreadableFile(f"tensor {name[:80]!r} is not described by dtype, shape and data_offsets")
        shapes[name] = shape
        end = max(end, offsets[1])
    if end != size - 8 - length:
        raise UnreadableFile(f"its tensors need {end} bytes of data, the file holds {size - 8 - length}")
    return shapes, metadata


def _tensor(entry: Any) -> tuple[list[int] | None, list[int]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
        return None, []
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not _naturals(shape) or not _naturals(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        return None, []
    return shape, offsets


def _naturals(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _open_regular(path: Path):
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotRegularFile("not a regular file")
        # Reads of a regular file never return early for lack of data, so blocking mode is not needed.
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
