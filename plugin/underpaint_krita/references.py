"""Reference pictures: a layer whose picture the result takes after (all of it, its style, its
composition or the face it shows), read by an IP-Adapter (docs/reference.md).

Krita-free. The document stores them (layer_list.py) by the layer's Krita uniqueId with the mode,
strength and range the artist chose; the picture is read from the layer for every request: the whole
layer, wherever it lies and whatever the selection, since a reference is a picture to take after, not a
place on the canvas. A picture from a file becomes a hidden layer first, so every reference is a layer
kept in the .kra.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from shared.messages import MAX_REFERENCES, REFERENCE_MODES, Reference, ReferenceMode

from .errors import TOO_MANY_REFERENCES
from .layer_list import WeightedLayerList, protocol_bounds

# The docker's mode picker: what of the picture the result takes.
MODES: dict[ReferenceMode, tuple[str, str]] = {
    "reference": ("Whole picture", "Take after everything in the picture: its subject, colours and style"),
    "style": ("Style", "Take only its style: colours, brushwork, mood; not what it shows"),
    "composition": ("Composition", "Take only its layout: where shapes and masses lie, not their style"),
    "face": ("Face", "Take after the face it shows (a photo or portrait with one face)"),
}
DEFAULT_MODE: ReferenceMode = "reference"
BOUNDS = protocol_bounds(Reference)
DEFAULT_STRENGTH: float = next(f.default for f in dataclasses.fields(Reference) if f.name == "strength")
# An IP-Adapter's image encoder reads 224 px (336 for some): a larger picture is shrunk before it is
# sent, so a photo of many megapixels costs the message a few megabytes at most.
SIDE = 1024
THUMBNAIL_SIDE = 48


@dataclass(frozen=True)
class ReferenceLayer:
    layer_id: str  # Krita's node uniqueId, as a string
    mode: str = DEFAULT_MODE
    strength: float = DEFAULT_STRENGTH
    start: float = 0.0
    end: float = 1.0


class References(WeightedLayerList[ReferenceLayer]):
    """The reference pictures of one document, at most one entry per layer, in the order they were added."""

    ITEM = ReferenceLayer
    KEY = "references"
    LIMIT = MAX_REFERENCES
    TOO_MANY = TOO_MANY_REFERENCES
    CHOICE = "mode"
    CHOICES = REFERENCE_MODES
    BOUNDS = BOUNDS


def sent_size(width: int, height: int, side: int = SIDE) -> tuple[int, int]:
    """(width, height) shrunk, keeping the aspect, to at most `side` pixels a side; never enlarged,
    never 0."""
    if width <= side and height <= side:
        return width, height
    scale = side / max(width, height)
    return max(1, min(side, round(width * scale))), max(1, min(side, round(height * scale)))
