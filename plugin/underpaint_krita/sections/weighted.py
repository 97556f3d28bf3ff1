"""What the docker's control-layer and reference-picture sections share: a list of layers, each with what
it is (a control's kind, a reference's mode), how strongly it acts and the part of the steps it acts in,
edited in place; without a selected entry, the picker says what the next layer is added as."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..controller import Controller
from ..qt import QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QSpinBox
from .base import Choice, fill_combo, narrow
from .layers import LayerListSection

PERCENT = 100  # start and end show as a percentage of the steps


@dataclass(frozen=True)
class Weighted:
    """One kind of weighted layer as its section shows it."""

    item: type  # the stored item: (layer_id, choice, strength, start, end), as controls.ControlLayer
    choice_field: str  # the item's field the picker edits
    choice_label: str  # the picker's row label
    choices: dict[str, tuple[str, str]]  # value -> (label, tooltip)
    default: str
    bounds: dict[str, tuple[float, float]]  # of strength, start and end
    tips: tuple[str, str, str]  # of the strength, start and end boxes
    entries: Callable[[], list[tuple[Any, str]]]  # (item, layer name) of the active document
    add: Callable[[str], object]  # the active layer, as the picker's choice
    edit: Callable[[Any], None]
    remove: Callable[[str], None]


class WeightedLayerSection(LayerListSection):
    """The list, the selected entry's choice, strength and range, Add layer (the active one), Remove;
    `self.choice` is the picker."""

    def __init__(self, controller: Controller, name: str, title: str, explanation: str, add_tip: str,
                 remove_tip: str, weighted: Weighted):
        super().__init__(controller, name, title, explanation, add_tip, remove_tip,
                         lambda: weighted.add(self.choice.currentData()), weighted.remove)
        self.weighted = weighted
        self._loading = False
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.choice = narrow(QComboBox())
        fill_combo(self.choice, [Choice(label, value, tip) for value, (label, tip) in weighted.choices.items()],
                   weighted.default)
        self.strength = QDoubleSpinBox()
        self.strength.setRange(*weighted.bounds["strength"])
        self.strength.setSingleStep(0.05)
        self.start, self.end = QSpinBox(), QSpinBox()
        for box, tip in zip((self.strength, self.start, self.end), weighted.tips, strict=True):
            box.setToolTip(tip)
        for box in (self.start, self.end):
            box.setRange(0, PERCENT)
            box.setSuffix("%")
        steps = QHBoxLayout()
        steps.addWidget(self.start)
        steps.addWidget(self.end)
        form.addRow(weighted.choice_label, self.choice)
        form.addRow("Strength", self.strength)
        form.addRow("Steps", steps)
        self.rows.insertLayout(self.rows.count() - 1, form)
        self._show(None)
        self.layer_list.currentItemChanged.connect(lambda *_: self._show(self._entry()))
        self.choice.currentIndexChanged.connect(self._edit)
        for box in (self.strength, self.start, self.end):
            box.valueChanged.connect(self._edit)

    def refresh(self) -> None:
        self.show_layers(self._rows())
        self._show(self._entry())

    def _rows(self) -> list[tuple[str, str]]:
        field, choices = self.weighted.choice_field, self.weighted.choices
        return [(f"{layer_name}: {choices[getattr(item, field)][0]}", item.layer_id)
                for item, layer_name in self.weighted.entries()]

    def _entry(self) -> Any | None:
        layer_id = self.selected()
        return next((item for item, _ in self.weighted.entries() if item.layer_id == layer_id), None)

    def _show(self, item: Any | None) -> None:
        """The selected entry's settings; without one, the choice the next layer is added as."""
        self._loading = True
        if item is not None:
            self.choice.setCurrentIndex(self.choice.findData(getattr(item, self.weighted.choice_field)))
        shown = item or self.weighted.item("")
        self.strength.setValue(shown.strength)
        self.start.setValue(round(shown.start * PERCENT))
        self.end.setValue(round(shown.end * PERCENT))
        for box in (self.strength, self.start, self.end):
            box.setEnabled(item is not None)
        self._loading = False

    def _edit(self, *_: object) -> None:
        layer_id = self.selected()
        if self._loading or layer_id is None:
            return
        self.weighted.edit(self.weighted.item(layer_id, self.choice.currentData(), self.strength.value(),
                                              self.start.value() / PERCENT, self.end.value() / PERCENT))
