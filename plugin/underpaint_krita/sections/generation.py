"""The docker's generation settings: strength, fill mode, detail, number of images, seed."""

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
from ..requests import DETAILS, FILL_MODES, Settings
from .base import Changed, Section, narrow


class GenerationSection(Section):
    """How a picture is made: strength, fill mode, detail, number of images, seed."""

    def __init__(self, controller: Controller, changed: Changed, fill_chosen: Changed, detail_chosen: Changed):
        super().__init__(controller)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.strength = QSlider(Qt.Orientation.Horizontal)
        self.strength.setRange(1, 100)
        self.strength.setValue(100)
        self.strength.valueChanged.connect(changed)
        self.strength_label = QLabel()
        form.addRow(self.strength_label, self.strength)
        self.fill_mode = narrow(QComboBox())
        self.fill_mode.setToolTip("How a selection is inpainted; without a selection it is not used")
        for mode, (label, tooltip) in FILL_MODES.items():
            self.fill_mode.addItem(label, mode)
            self.fill_mode.setItemData(self.fill_mode.count() - 1, tooltip, Qt.ItemDataRole.ToolTipRole)
        self.fill_mode.currentIndexChanged.connect(fill_chosen)
        form.addRow("Fill", self.fill_mode)
        self.detail = narrow(QComboBox())
        self.detail.setToolTip("On a canvas larger than the model's own size (docs/upscale.md)")
        for value, (label, tooltip) in DETAILS.items():
            self.detail.addItem(label, value)
            self.detail.setItemData(self.detail.count() - 1, tooltip, Qt.ItemDataRole.ToolTipRole)
        self.detail.currentIndexChanged.connect(detail_chosen)
        form.addRow("Detail", self.detail)
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
        if settings.seed is not None and self.seed.text() != str(settings.seed):
            self.seed.setText(str(settings.seed))
        self.fill_mode.setCurrentIndex(self.fill_mode.findData(settings.fill))
        self.detail.setCurrentIndex(self.detail.findData(settings.detail))

    def store(self, settings: Settings) -> None:
        settings.strength = self.strength.value() / 100
        settings.batch_size = self.batch.value()
        settings.seed = min(int(self.seed.text() or 0), MAX_SEED) if self.fixed_seed.isChecked() else None

    def refresh(self) -> None:
        self.seed.setEnabled(self.fixed_seed.isChecked())
        welcome = self.controller.server.welcome
        if welcome is not None:
            self.batch.setMaximum(welcome.limits.max_batch)
