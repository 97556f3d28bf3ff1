"""What a document keeps per layer (region prompts, control layers): at most one item per layer, in
the order they were added, stored as versioned JSON in the document.

Krita-free. Items name their layer by Krita's uniqueId (`layer_id`), which survives saving and
reopening the .kra; the pixels are never stored, they are read from the layer for every request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import ClassVar, Generic, Protocol, TypeVar

from .errors import UserError

log = logging.getLogger(__name__)
VERSION = 1


class LayerItem(Protocol):
    layer_id: str


T = TypeVar("T", bound=LayerItem)


class LayerList(Generic[T]):
    """A subclass names its item type, its JSON key, its limit and the error for one too many, and
    says what makes a stored item wrong (`problem`)."""

    ITEM: ClassVar[type]
    KEY: ClassVar[str]  # the JSON key of the list, also the word in error messages
    LIMIT: ClassVar[int]  # the protocol's; a server may take fewer
    TOO_MANY: ClassVar[str]  # the UserError code when the list is full

    def __init__(self, items: list[T] | None = None):
        self._items: list[T] = list(items or [])

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, layer_id: str) -> T | None:
        return next((item for item in self._items if item.layer_id == layer_id), None)

    def set(self, item: T, limit: int | None = None) -> None:
        """Add an item, or replace the one of its layer (keeping its place); `limit` is the server's
        (its `welcome` limits), LIMIT without one."""
        for i, old in enumerate(self._items):
            if old.layer_id == item.layer_id:
                self._items[i] = item
                return
        self.check_room(limit)
        self._items.append(item)

    def check_room(self, limit: int | None = None) -> None:
        """UserError(TOO_MANY) when an item for a new layer would be one too many (`limit` as for `set`)."""
        limit = self.LIMIT if limit is None else limit
        if len(self._items) >= limit:
            raise UserError(self.TOO_MANY, f"this server takes at most {limit}")

    def remove(self, layer_id: str) -> None:
        self._items = [item for item in self._items if item.layer_id != layer_id]

    @classmethod
    def problem(cls, item: T) -> str | None:
        """What is wrong with an item read back from a document; None when nothing is."""
        return None

    def to_json(self) -> bytes:
        return json.dumps({"version": VERSION, self.KEY: [asdict(item) for item in self._items]}).encode()

    @classmethod
    def from_json(cls, blob: bytes):
        """ValueError (naming what is wrong) for anything but what `to_json` wrote."""
        try:
            data = json.loads(blob)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"stored {cls.KEY}: not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"stored {cls.KEY}: not a version {VERSION} list of {cls.KEY}")
        items = []
        for i, stored in enumerate(data.get(cls.KEY, [])):
            try:
                item = cls.ITEM(**stored)
            except TypeError as exc:
                raise ValueError(f"stored {cls.KEY}[{i}]: {exc}") from None
            problem = cls.problem(item)
            if problem is not None:
                raise ValueError(f"stored {cls.KEY}[{i}]: {problem}")
            items.append(item)
        return cls(items[:cls.LIMIT])

    @classmethod
    def stored(cls, blob: bytes | None):
        """The list a document stored, or an empty one when it stored none or one this plugin cannot
        read (logged: the document stays usable)."""
        if blob:
            try:
                return cls.from_json(blob)
            except ValueError as exc:
                log.warning("starting without %s: %s", cls.KEY, exc)
        return cls()
