"""Control layers: a layer whose pixels steer the picture's structure (a sketch's lines, a depth
map, a pose...), read by a ControlNet of its kind (docs/control.md).

Krita-free. The document stores them (layer_list.py) by the layer's Krita uniqueId with the kind,
strength and range the artist chose; the control image itself is read from the layer for every
request, so a stroke on the sketch layer changes the next picture (and, in live mode, the next frame).
A control layer can also be made from the canvas by the server (`preprocess`, session.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import get_args

from shared.messages import CONTROL_KINDS, MAX_CONTROLS, Control, ControlKind, PreprocessKind

from .errors import TOO_MANY_CONTROLS
from .layer_list import LayerList

# The docker's kind picker: what each kind of control layer holds, as the artist paints it.
KINDS: dict[ControlKind, tuple[str, str]] = {
    "scribble": ("Scribble", "Rough sketch lines, in any colour on a transparent layer"),
    "lineart": ("Line art", "Clean, finished lines"),
    "softedge": ("Soft edges", "Soft outlines of shapes"),
    "canny": ("Canny edges", "Thin, exact edges, as an edge detector draws them"),
    "depth": ("Depth", "A depth map: near is light, far is dark"),
    "pose": ("Pose", "An OpenPose skeleton"),
    "tile": ("Tile", "A picture whose content and colours are to be kept"),
}
DEFAULT_KIND: ControlKind = "scribble"
# The kinds the server makes from a picture (`preprocess`), as shared/ lists them.
PREPROCESS_KINDS: tuple[str, ...] = get_args(PreprocessKind)
# The bounds the protocol gives strength, start and end (shared/messages.py Control).
BOUNDS = {f.name: (f.metadata["min"], f.metadata["max"]) for f in dataclasses.fields(Control)
          if f.name in ("strength", "start", "end")}


@dataclass(frozen=True)
class ControlLayer:
    layer_id: str  # Krita's node uniqueId, as a string
    kind: str = DEFAULT_KIND
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0


class Controls(LayerList[ControlLayer]):
    """The control layers of one document, at most one entry per layer, in the order they were added."""

    ITEM = ControlLayer
    KEY = "controls"
    LIMIT = MAX_CONTROLS
    TOO_MANY = TOO_MANY_CONTROLS

    @classmethod
    def problem(cls, item: ControlLayer) -> str | None:
        """What makes a control layer's settings unusable, naming the field; None when nothing does."""
        if not isinstance(item.layer_id, str):
            return "layer_id must be text"
        if item.kind not in CONTROL_KINDS:
            return f"kind is {item.kind!r}, not one of {', '.join(CONTROL_KINDS)}"
        for name, (low, high) in BOUNDS.items():
            value = getattr(item, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                return f"{name} is {value!r}, not a number from {low:g} to {high:g}"
        if item.start >= item.end:
            return f"start ({item.start:g}) must come before end ({item.end:g})"
        return None
