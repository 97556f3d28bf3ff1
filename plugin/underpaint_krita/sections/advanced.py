"""The docker's advanced settings behind a toggle: steps, CFG scale, sampler."""

from __future__ import annotations

from ..controller import Controller
from ..qt import QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, Qt, QToolButton, QWidget
from ..requests import Settings
from .base import Changed, Section, fill_combo


class AdvancedSection(Section):
    """Steps, CFG scale and sampler, behind a toggle."""

    def __init__(self, controller: Controller, changed: Changed):
        super().__init__(controller)
        self.toggle = QToolButton()
        self.toggle.setText("Advanced")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.toggled.connect(self._show)
        self.column.addWidget(self.toggle)
        self.body = QWidget()
        form = QFormLayout(self.body)
        form.setContentsMargins(0, 0, 0, 0)
        self.steps = QSpinBox()
        self.steps.setRange(1, 150)
        self.cfg = QDoubleSpinBox()
        self.cfg.setRange(0.0, 30.0)
        self.cfg.setSingleStep(0.5)
        self.scheduler = QComboBox()
        for widget in (self.steps, self.cfg):
            widget.valueChanged.connect(changed)
        self.scheduler.currentIndexChanged.connect(changed)
        form.addRow("Steps", self.steps)
        form.addRow("CFG scale", self.cfg)
        form.addRow("Sampler", self.scheduler)
        self.body.setVisible(False)
        self.column.addWidget(self.body)

    def load(self, settings: Settings) -> None:
        self.steps.setValue(settings.steps)
        self.cfg.setValue(settings.cfg_scale)

    def store(self, settings: Settings) -> None:
        settings.steps = self.steps.value()
        settings.cfg_scale = self.cfg.value()
        if self.scheduler.currentData():
            settings.scheduler = self.scheduler.currentData()

    def refresh(self) -> None:
        welcome = self.controller.server.welcome
        if welcome is not None:
            labels = welcome.scheduler_labels
            choices = [(labels.get(name, name), name) for name in welcome.schedulers]
            fill_combo(self.scheduler, choices, self.controller.settings.scheduler)

    def _show(self, shown: bool) -> None:
        self.body.setVisible(shown)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
