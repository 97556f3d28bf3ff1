"""The results of one document, newest last, kept small enough to live inside its .kra file.

Pixels are stored as PNG (shared.images): a result costs its compressed size, and the whole
history becomes one msgpack blob the document glue saves as a document annotation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields

import msgpack

from shared.images import decode_png, encode_png
from shared.messages import Generate, Image

FORMAT = "underpaint-history"
VERSION = 1
DEFAULT_LIMIT = 20 * 1024 * 1024
# Bytes counted for an entry's fields besides its PNG; keeps thousands of tiny entries bounded too.
_ENTRY_OVERHEAD = 256


@dataclass
class Entry:
    """One result image and how it was made."""

    id: str
    prompt: str
    negative_prompt: str
    seed: int
    model: str
    mode: str
    strength: float
    x: int
    y: int
    width: int
    height: int
    png: bytes
    created: float = field(default_factory=time.time)

    @classmethod
    def from_result(cls, entry_id: str, request: Generate, image: Image, seed: int) -> Entry:
        if image.format != "rgba8":
            raise ValueError(f"result images must be rgba8, got {image.format!r}")
        return cls(id=entry_id, prompt=request.prompt, negative_prompt=request.negative_prompt, seed=seed,
                   model=request.model, mode=request.mode,
                   strength=1.0 if request.strength is None else request.strength,
                   x=image.x, y=image.y, width=image.width, height=image.height,
                   png=encode_png(image.data, image.width, image.height))

    @property
    def size(self) -> int:
        return len(self.png) + len(self.prompt) + len(self.negative_prompt) + _ENTRY_OVERHEAD

    def image(self) -> Image:
        """The pixels as an rgba8 Image at the entry's canvas position."""
        width, height, data = decode_png(self.png)
        return Image(width=width, height=height, format="rgba8", data=data, x=self.x, y=self.y)


class History:
    """Entries oldest first; adding beyond `limit` bytes drops the oldest (the newest always stays)."""

    def __init__(self, limit: int = DEFAULT_LIMIT):
        self.limit = limit
        self._entries: list[Entry] = []

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self._entries)

    def newest_first(self) -> list[Entry]:
        """Newest job first, the images of one batch (ids `<job>-<index>`) in their own order."""
        jobs: dict[str, list[Entry]] = {}
        for entry in self._entries:
            jobs.setdefault(entry.id.rsplit("-", 1)[0], []).append(entry)
        return [entry for batch in reversed(jobs.values()) for entry in batch]

    def get(self, entry_id: str) -> Entry | None:
        return next((e for e in self._entries if e.id == entry_id), None)

    def add(self, entry: Entry) -> list[Entry]:
        """Append `entry`; returns the entries dropped to stay within the limit."""
        self._entries.append(entry)
        dropped, total = [], self.size
        while total > self.limit and len(self._entries) > 1:
            oldest = self._entries.pop(0)
            total -= oldest.size
            dropped.append(oldest)
        return dropped

    def remove(self, entry_id: str) -> Entry | None:
        entry = self.get(entry_id)
        if entry is not None:
            self._entries.remove(entry)
        return entry

    def to_blob(self) -> bytes:
        return msgpack.packb({"format": FORMAT, "version": VERSION,
                              "entries": [asdict(e) for e in self._entries]}, use_bin_type=True)

    @classmethod
    def from_blob(cls, blob: bytes, limit: int = DEFAULT_LIMIT) -> History:
        """The history saved by `to_blob`; ValueError if the blob is not one (or from a newer plugin)."""
        try:
            body = msgpack.unpackb(blob, raw=False)
        except Exception as exc:  # msgpack raises many types for bad bytes
            raise ValueError(f"the stored history is not readable ({type(exc).__name__})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError("the stored data is not an Underpaint history")
        if body.get("version") != VERSION:
            raise ValueError(f"the stored history has version {body.get('version')}, this plugin reads {VERSION}")
        names = {f.name for f in fields(Entry)}
        history = cls(limit)
        for raw in body.get("entries", []):
            try:
                history._entries.append(Entry(**{k: v for k, v in raw.items() if k in names}))
            except TypeError as exc:
                raise ValueError(f"a stored history entry is incomplete ({exc})") from None
        return history
