"""The docker's control layers: layers whose lines or shapes the picture follows (docs/control.md),
each with its kind, strength and the part of the steps it acts in, edited in place."""

from __future__ import annotations

from ..controller import Controller
from ..controls import BOUNDS, DEFAULT_KIND, KINDS, ControlLayer
from .weighted import Weighted, WeightedLayerSection


class ControlsSection(WeightedLayerSection):
    """The list, the selected control's kind, strength and range, Add layer (the active one), Remove."""

    def __init__(self, controller: Controller):
        super().__init__(controller, "controls", "Control layers",
                         "Layers whose lines or shapes the picture follows, such as a sketch",
                         "Use the active layer as a control of the kind chosen below; what is painted on it "
                         "steers every picture, live ones included",
                         "Stop using the selected layer as a control (the layer stays)",
                         Weighted(ControlLayer, "kind", "Kind", KINDS, DEFAULT_KIND, BOUNDS, (
                             "How strongly the picture follows the layer",
                             "The share of the steps done before the control starts acting",
                             "The share of the steps after which the control stops: the model finishes the details "
                             "freely"), controller.controls, controller.add_control, controller.set_control,
                             controller.remove_control))
        self.kind = self.choice
