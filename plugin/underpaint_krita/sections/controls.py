"""The docker's control layers: layers whose lines or shapes the picture follows (docs/control.md),
each with its kind, strength and the part of the steps it acts in, edited in place; and a control
layer made by the server from the canvas."""

from __future__ import annotations

from ..controller import Controller
from ..controls import BOUNDS, DEFAULT_KIND, KINDS, PREPROCESS_KINDS, ControlLayer
from ..qt import QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QSizePolicy, QSpinBox, QToolButton
from .base import Choice, fill_combo, narrow
from .layers import LayerListSection

PERCENT = 100  # start and end show as a percentage of the steps
FROM_CANVAS = "From canvas"
MAKING = "Making…"


class ControlsSection(LayerListSection):
    """The list, the selected control's kind, strength and range, Add layer (the active one), Remove;
    a kind and From canvas, which has the server make a control layer of that kind from the canvas."""

    def __init__(self, controller: Controller):
        super().__init__(controller, "controls", "Control layers",
                         "Layers whose lines or shapes the picture follows, such as a sketch",
                         "Use the active layer as a control of the kind chosen below; what is painted on it "
                         "steers every picture, live ones included",
                         "Stop using the selected layer as a control (the layer stays)",
                         lambda: controller.add_control(self.kind.currentData()), controller.remove_control)
        self._loading = False
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.kind = narrow(QComboBox())
        fill_combo(self.kind, [Choice(label, kind, tip) for kind, (label, tip) in KINDS.items()], DEFAULT_KIND)
        self.strength = QDoubleSpinBox()
        self.strength.setRange(*BOUNDS["strength"])
        self.strength.setSingleStep(0.05)
        self.strength.setToolTip("How strongly the picture follows the layer")
        self.start, self.end = QSpinBox(), QSpinBox()
        for box, tip in ((self.start, "The share of the steps done before the control starts acting"),
                         (self.end, "The share of the steps after which the control stops: the model finishes "
                                    "the details freely")):
            box.setRange(0, PERCENT)
            box.setSuffix("%")
            box.setToolTip(tip)
        steps = QHBoxLayout()
        steps.addWidget(self.start)
        steps.addWidget(self.end)
        form.addRow("Kind", self.kind)
        form.addRow("Strength", self.strength)
        form.addRow("Steps", steps)
        self.rows.insertLayout(self.rows.count() - 1, form)
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
        self._show(None)
        self.layer_list.currentItemChanged.connect(lambda *_: self._show(self._control()))
        self.kind.currentIndexChanged.connect(self._edit)
        for box in (self.strength, self.start, self.end):
            box.valueChanged.connect(self._edit)

    def refresh(self) -> None:
        self.show_layers([(f"{layer_name}: {KINDS[control.kind][0]}", control.layer_id)
                          for control, layer_name in self.controller.controls()])
        self._show(self._control())
        session = self.controller.session()
        making = session is not None and session.making_control()
        self.from_canvas.setText(MAKING if making else FROM_CANVAS)
        self.from_canvas.setEnabled(session is not None and not making)

    def _control(self) -> ControlLayer | None:
        layer_id = self.selected()
        return next((c for c, _ in self.controller.controls() if c.layer_id == layer_id), None)

    def _show(self, control: ControlLayer | None) -> None:
        """The selected control's settings; without one, the kind the next layer is added as."""
        self._loading = True
        if control is not None:
            self.kind.setCurrentIndex(self.kind.findData(control.kind))
        shown = control or ControlLayer("")
        self.strength.setValue(shown.strength)
        self.start.setValue(round(shown.start * PERCENT))
        self.end.setValue(round(shown.end * PERCENT))
        for box in (self.strength, self.start, self.end):
            box.setEnabled(control is not None)
        self._loading = False

    def _edit(self, *_: object) -> None:
        layer_id = self.selected()
        if self._loading or layer_id is None:
            return
        self.controller.set_control(ControlLayer(layer_id, self.kind.currentData(), self.strength.value(),
                                                 self.start.value() / PERCENT, self.end.value() / PERCENT))
