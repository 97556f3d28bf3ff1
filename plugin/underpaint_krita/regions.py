"""Regional prompts: a layer or group whose alpha says where its own prompt applies.

Krita-free. The document stores them (layer_list.py) by the layer's Krita uniqueId; the mask itself
is never stored, it is read from the layer's alpha for every request, so painting on the layer
reshapes the region.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from shared.messages import MAX_REGIONS

from .errors import TOO_MANY_REGIONS
from .layer_list import LayerList


@dataclass(frozen=True)
class RegionPrompt:
    layer_id: str  # Krita's node uniqueId, as a string
    prompt: str
    negative_prompt: str = ""


class Regions(LayerList[RegionPrompt]):
    """The region prompts of one document, at most one per layer, in the order they were added."""

    ITEM = RegionPrompt
    KEY = "regions"
    LIMIT = MAX_REGIONS
    TOO_MANY = TOO_MANY_REGIONS

    @classmethod
    def problem(cls, item: RegionPrompt) -> str | None:
        if not all(isinstance(v, str) for v in asdict(item).values()):
            return "layer_id, prompt and negative_prompt must be text"
        return None
