"""The docker's control layers: layers whose lines or shapes the picture follows (docs/control.md),
each with its kind, strength and the part of the steps it acts in, edited in place; and a control
layer made by the server from the canvas."""

from __future__ import annotations

from ..controller import Controller
from ..controls import BOUNDS, DEFAULT_KIND, KINDS, PREPROCESS_KINDS, ControlLayer
from ..qt import QComboBox, QFormLayout, QSizePolicy, QToolButton
from .base import Choice, fill_combo, narrow
from .weighted import Weighted, WeightedLayerSection

FROM_CANVAS = "From canvas"
MAKING = "Making…"


class ControlsSection(WeightedLayerSection):
    """The list, the selected control's kind, strength and range, Add layer (the active one), Remove;
    a kind and From canvas, which has the server make a control layer of that kind from the canvas."""

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
        # Its own kind: the one above is the selected control's. Two rows: side by side they would not fit.
        made = QFormLayout()
        made.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.made_kind = narrow(QComboBox())
        self.made_kind.setToolTip("The kind of control layer From canvas makes")
        fill_combo(self.made_kind, [Choice(KINDS[kind][0], kind, KINDS[kind][1]) for kind in PREPROCESS_KINDS],
                   DEFAULT_KIND)
        made.addRow("Make", self.made_kind)
        self.rows.addLayout(made)
        self.from_canvas = QToolButton()
        self.from_canvas.setText(FROM_CANVAS)
        self.from_canvas.setToolTip("Have the server make a control layer of this kind from what the canvas shows "
                                    "(the selected area and around it, with a selection): it comes in as a new, "
                                    "hidden layer above the active one")
        self.from_canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.from_canvas.clicked.connect(lambda: controller.control_from_canvas(self.made_kind.currentData()))
        self.rows.addWidget(self.from_canvas)

    def refresh(self) -> None:
        super().refresh()
        session = self.controller.session()
        making = session is not None and session.making_control()
        self.from_canvas.setText(MAKING if making else FROM_CANVAS)
        self.from_canvas.setEnabled(session is not None and not making)
