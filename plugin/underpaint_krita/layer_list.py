"""What a document keeps per layer (region prompts, control layers, reference pictures): at most one
item per layer, in the order they were added, stored as versioned JSON in the document.

Krita-free. Items name their layer by Krita's uniqueId (`layer_id`), which survives saving and
reopening the .kra; the pixels are never stored, they are read from the layer for every request.
"""

from __future__ import annotations

import dataclasses
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
        """UserError(TOO_MANY) when one more item would be more than `limit` (as `set` takes it)."""
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


def protocol_bounds(message: type) -> dict[str, tuple[float, float]]:
    """The bounds the protocol gives a message's strength, start and end (shared/messages.py)."""
    return {f.name: (f.metadata["min"], f.metadata["max"]) for f in dataclasses.fields(message)
            if f.name in ("strength", "start", "end")}


class WeightedLayerList(LayerList[T]):
    """Items that each say what their layer is (a control's kind, a reference's mode), how strongly it
    acts and over which share [start, end] of the steps, within the protocol's bounds."""

    CHOICE: ClassVar[str]  # the item's field that says what the layer is
    CHOICES: ClassVar[tuple[str, ...]]  # the protocol's values for it
    BOUNDS: ClassVar[dict[str, tuple[float, float]]]  # protocol_bounds of the protocol's message

    @classmethod
    def problem(cls, item: T) -> str | None:
        """What makes an item's settings unusable, naming the field; None when nothing does."""
        if not isinstance(item.layer_id, str):
            return "layer_id must be text"
        choice = getattr(item, cls.CHOICE)
        if choice not in cls.CHOICES:
            return f"{cls.CHOICE} is {choice!r}, not one of {', '.join(cls.CHOICES)}"
        for name, (low, high) in cls.BOUNDS.items():
            value = getattr(item, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                return f"{name} is {value!r}, not a number from {low:g} to {high:g}"
        if item.start >= item.end:
            return f"start ({item.start:g}) must come before end ({item.end:g})"
        return None
