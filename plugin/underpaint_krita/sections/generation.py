"""The docker's generation settings: strength, fill mode, number of images, seed."""

from __future__ import annotations

from shared.messages import MAX_SEED

from ..controller import Controller
from ..qt import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QRegularExpression,
    QRegularExpressionValidator,
    QSlider,
    QSpinBox,
    Qt,
)
from ..requests import FILL_MODES, Settings
from .base import Changed, Section


class GenerationSection(Section):
    """How a picture is made: strength, fill mode, number of images, seed."""

    def __init__(self, controller: Controller, changed: Changed, fill_chosen: Changed):
        super().__init__(controller)
        form = QFormLayout()
        self.strength = QSlider(Qt.Orientation.Horizontal)
        self.strength.setRange(1, 100)
        self.strength.setValue(100)
        self.strength.valueChanged.connect(changed)
        self.strength_label = QLabel()
        form.addRow(self.strength_label, self.strength)
        self.fill_mode = QComboBox()
        self.fill_mode.setToolTip("How a selection is inpainted; without a selection it is not used")
        for mode, (label, tooltip) in FILL_MODES.items():
            self.fill_mode.addItem(label, mode)
            self.fill_mode.setItemData(self.fill_mode.count() - 1, tooltip, Qt.ItemDataRole.ToolTipRole)
        self.fill_mode.currentIndexChanged.connect(fill_chosen)
        form.addRow("Fill", self.fill_mode)
        self.batch = QSpinBox()
        self.batch.setRange(1, 8)
        self.batch.valueChanged.connect(changed)
        form.addRow("Images", self.batch)
        seed_row = QHBoxLayout()
        self.fixed_seed = QCheckBox("Fixed")
        self.fixed_seed.setToolTip("Off: a new random seed every time. On: repeat this seed.")
        self.seed = QLineEdit("0")
        self.seed.setValidator(QRegularExpressionValidator(QRegularExpression("[0-9]{1,19}")))
        self.seed.setToolTip("A result's seed is under its thumbnail")
        self.fixed_seed.toggled.connect(changed)
        self.seed.textChanged.connect(changed)
        seed_row.addWidget(self.fixed_seed)
        seed_row.addWidget(self.seed, 1)
        form.addRow("Seed", seed_row)
        self.column.addLayout(form)

    def load(self, settings: Settings) -> None:
        self.strength.setValue(round(settings.strength * 100))
        self.batch.setValue(settings.batch_size)
        self.fixed_seed.setChecked(settings.seed is not None)
        self.seed.setText(str(settings.seed or 0))
        self.fill_mode.setCurrentIndex(self.fill_mode.findData(settings.fill))

    def store(self, settings: Settings) -> None:
        settings.strength = self.strength.value() / 100
        settings.batch_size = self.batch.value()
        settings.seed = min(int(self.seed.text() or 0), MAX_SEED) if self.fixed_seed.isChecked() else None
        self.seed.setEnabled(self.fixed_seed.isChecked())

    def refresh(self) -> None:
        welcome = self.controller.server.welcome
        if welcome is not None:
            self.batch.setMaximum(welcome.limits.max_batch)
