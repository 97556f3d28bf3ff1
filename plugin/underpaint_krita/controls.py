"""Control layers: a layer whose pixels steer the picture's structure (a sketch's lines, a depth
map, a pose...), read by a ControlNet of its kind (docs/control.md).

Krita-free. The document stores them (layer_list.py) by the layer's Krita uniqueId with the kind,
strength and range the artist chose; the control image itself is read from the layer for every
request, so a stroke on the sketch layer changes the next picture (and, in live mode, the next frame).
A control layer can also be made from the canvas by the server (`preprocess`, session.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from shared.messages import CONTROL_KINDS, MAX_CONTROLS, Control, ControlKind, PreprocessKind

from .errors import TOO_MANY_CONTROLS
from .layer_list import WeightedLayerList, protocol_bounds

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
BOUNDS = protocol_bounds(Control)


@dataclass(frozen=True)
class ControlLayer:
    layer_id: str  # Krita's node uniqueId, as a string
    kind: str = DEFAULT_KIND
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0


class Controls(WeightedLayerList[ControlLayer]):
    """The control layers of one document, at most one entry per layer, in the order they were added."""

    ITEM = ControlLayer
    KEY = "controls"
    LIMIT = MAX_CONTROLS
    TOO_MANY = TOO_MANY_CONTROLS
    CHOICE = "kind"
    CHOICES = CONTROL_KINDS
    BOUNDS = BOUNDS
