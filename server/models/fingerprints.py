"""Which file a model's name stands for, as a digest every machine of a cluster can compare.

A replica that reads its models from its own copy must hold the same file under each name as the
front end, or the same request would paint differently depending on where it ran. Reading every
byte of a 7 GB checkpoint on every start costs minutes, so a file's digest covers its size, its first
and its last 16 MiB (a safetensors header and the start of its tensors; a truncated copy differs
there); a model folder's covers each file's relative path the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from .registry import Registry

SAMPLE = 16 * 1024 * 1024
CHUNK = 1024 * 1024
# A model folder (diffusers) holds some fifteen files; past this many, the rest are not read.
MAX_FILES = 256


def fingerprint(path: Path) -> str:
    """The digest of a model's file or folder."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())[:MAX_FILES]
    for file in files:
        name = file.name if file == path else file.relative_to(path).as_posix()
        size = file.stat().st_size
        digest.update(f"{name}\0{size}\0".encode())
        with file.open("rb") as opened:
            _read_into(digest, opened, min(size, SAMPLE))
            if size > SAMPLE:
                opened.seek(max(SAMPLE, size - SAMPLE))
                _read_into(digest, opened, size - opened.tell())
    return digest.hexdigest()


def _read_into(digest: hashlib._Hash, opened: BinaryIO, count: int) -> None:
    while count > 0 and (chunk := opened.read(min(CHUNK, count))):
        digest.update(chunk)
        count -= len(chunk)


def fingerprints(registry: Registry) -> dict[str, str]:
    """"kind/name" -> digest, for every usable model the registry lists."""
    return {f"{entry.kind}/{entry.name}": fingerprint(entry.path) for entry in registry.entries() if not entry.refused}


def differing(reference: dict[str, str], other: dict[str, str]) -> list[str]:
    """The names both know that stand for different files."""
    return sorted(name for name in reference.keys() & other.keys() if reference[name] != other[name])
