"""Models loaded from registry entries and kept for the next jobs, most recently used last, up to a
capacity: ControlNets, IP-Adapters and their image encoders, which a live session uses at every frame.

A model that cannot be loaded is marked broken in the registry (so `models` shows why) and raised as
ModelBroken naming the request's field.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from ..errors import ModelBroken
from .entry import ModelEntry
from .registry import Registry

log = logging.getLogger(__name__)

T = TypeVar("T")


class Loaded(Generic[T]):
    def __init__(self, registry: Registry, what: str, load: Callable[[ModelEntry], T], capacity: int):
        self.registry = registry
        self.what = what  # as an error names it: "ControlNet", "IP-Adapter"
        self.load = load
        self.capacity = capacity
        self._models: OrderedDict[tuple[Path, str], T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry, field: str) -> T:
        """`entry` loaded (ModelBroken naming `field` where it cannot be), kept for the next jobs."""
        key = (entry.path, entry.fingerprint())  # a changed file loads again
        with self._lock:
            found = self._models.get(key)
            if found is None:
                log.info("loading %s %s", self.what, entry.name)
                try:
                    found = self.load(entry)
                except Exception as exc:
                    self.registry.mark_broken(entry.name, f"cannot be loaded: {exc}", entry.kind)
                    raise ModelBroken(f"{self.what} {entry.name} cannot be loaded: {exc}", field) from exc
                self._models[key] = found
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
            self._models.move_to_end(key)
            return found

    def clear(self) -> None:
        """Let go of every loaded model (after the device ran out of memory); each loads again when used."""
        with self._lock:
            self._models.clear()
