"""LoRAs on a loaded model: loaded through diffusers + peft, switched per request, never fused.

A LoRA stays loaded (as a peft adapter) after the request that asked for it, so toggling it is
cheap; a request that does not ask for it gets it deactivated. Deactivated adapters leave the
base layers' output untouched (peft computes `base(x)` alone), so results without a LoRA are the
same pixels as before it was ever loaded. At most `capacity` adapters stay loaded per model.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from diffusers import DiffusionPipeline

from ..errors import ModelBroken
from .entry import ModelEntry

log = logging.getLogger(__name__)

CAPACITY = 4
MAX_REASON = 200


@dataclass(frozen=True)
class Wanted:
    entry: ModelEntry
    weight: float

    @property
    def adapter(self) -> str:
        return adapter_name(self.entry)


def adapter_name(entry: ModelEntry) -> str:
    """A peft-safe adapter name that changes when the file does, so an edited LoRA is reloaded."""
    return "lora_" + entry.fingerprint()[:16]


class LoraSlots:
    """The adapters loaded into each model, least recently used first.

    `on_broken(name, reason)` is told when a LoRA fails to load (pass the registry's `mark_broken`
    for kind "lora"), so the model list shows it as refused instead of offering it again.
    """

    def __init__(self, capacity: int = CAPACITY, on_broken: Callable[[str, str], None] | None = None):
        self.capacity = capacity
        self.on_broken = on_broken
        self._order: weakref.WeakKeyDictionary[DiffusionPipeline, list[str]] = weakref.WeakKeyDictionary()

    def activate(self, pipe: DiffusionPipeline, wanted: Sequence[Wanted]) -> list[dict[str, Any]]:
        """Make exactly `wanted` active on `pipe` (loading what is missing); returns them for `info`.

        Raises ModelBroken (field "prompt") naming a LoRA that cannot be loaded.
        """
        order = self._order.setdefault(pipe, [])
        loaded = loaded_adapters(pipe)
        order[:] = [name for name in order if name in loaded]
        names = [w.adapter for w in wanted]
        for item in wanted:
            if item.adapter not in loaded:
                self._evict(pipe, order, keep=set(names), room_for=1)
                try:
                    load(pipe, item)
                except ModelBroken as exc:
                    if self.on_broken is not None:
                        self.on_broken(item.entry.name, exc.message.removeprefix(f"LoRA {item.entry.name} "))
                    raise
                loaded.add(item.adapter)
            if item.adapter in order:
                order.remove(item.adapter)
            order.append(item.adapter)
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, [w.weight for w in wanted])
        elif loaded:
            pipe.disable_lora()
        return [{"name": w.entry.name, "weight": w.weight} for w in wanted]

    def _evict(self, pipe: DiffusionPipeline, order: list[str], keep: set[str], room_for: int) -> None:
        while len(order) + room_for > self.capacity:
            victim = next((name for name in order if name not in keep), None)
            if victim is None:
                return
            order.remove(victim)
            pipe.delete_adapters([victim])


def loaded_adapters(pipe: DiffusionPipeline) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


def load(pipe: DiffusionPipeline, item: Wanted) -> None:
    entry = item.entry
    log.info("loading LoRA %s from %s", entry.name, entry.path)
    try:
        # A path, not a state dict: diffusers then also reads the file's metadata (alphas, ranks).
        pipe.load_lora_weights(str(entry.path.parent), weight_name=entry.path.name, adapter_name=item.adapter)
    except Exception as exc:
        log.exception("LoRA %s could not be loaded from %s", entry.name, entry.path)
        if item.adapter in loaded_adapters(pipe):
            pipe.delete_adapters([item.adapter])
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(str(entry.path), entry.name)
        raise ModelBroken(f"LoRA {entry.name} could not be loaded: {reason[:MAX_REASON]}", "prompt") from exc
