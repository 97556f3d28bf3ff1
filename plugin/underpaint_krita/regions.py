"""Regional prompts: a layer or group whose alpha says where its own prompt applies.

Krita-free. The document stores them (a JSON annotation, so they survive saving and reopening)
by the layer's Krita uniqueId; the mask itself is never stored, it is read from the layer's
alpha for every request, so painting on the layer reshapes the region.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from shared.messages import MAX_REGIONS

from .errors import TOO_MANY_REGIONS, UserError

VERSION = 1


@dataclass(frozen=True)
class RegionPrompt:
    layer_id: str  # Krita's node uniqueId, as a string
    prompt: str
    negative_prompt: str = ""


class Regions:
    """The region prompts of one document, at most one per layer, in the order they were added."""

    def __init__(self, items: list[RegionPrompt] | None = None):
        self._items: list[RegionPrompt] = list(items or [])

    def __iter__(self) -> Iterator[RegionPrompt]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, layer_id: str) -> RegionPrompt | None:
        return next((r for r in self._items if r.layer_id == layer_id), None)

    def set(self, region: RegionPrompt, limit: int = MAX_REGIONS) -> None:
        """Add a region, or give a layer that already is one its new prompt (keeping its place);
        `limit` is the server's (its `welcome` limits)."""
        for i, old in enumerate(self._items):
            if old.layer_id == region.layer_id:
                self._items[i] = region
                return
        if len(self._items) >= limit:
            raise UserError(TOO_MANY_REGIONS, f"this server takes at most {limit}")
        self._items.append(region)

    def remove(self, layer_id: str) -> None:
        self._items = [r for r in self._items if r.layer_id != layer_id]

    def to_json(self) -> bytes:
        return json.dumps({"version": VERSION, "regions": [asdict(r) for r in self._items]}).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> Regions:
        """ValueError (naming what is wrong) for anything but what `to_json` wrote."""
        try:
            data = json.loads(blob)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"stored regions: not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError("stored regions: not a version 1 region list")
        items = []
        for i, item in enumerate(data.get("regions", [])):
            try:
                region = RegionPrompt(**item)
            except TypeError as exc:
                raise ValueError(f"stored regions[{i}]: {exc}") from None
            if not all(isinstance(v, str) for v in asdict(region).values()):
                raise ValueError(f"stored regions[{i}]: layer_id, prompt and negative_prompt must be text")
            items.append(region)
        return cls(items[:MAX_REGIONS])
