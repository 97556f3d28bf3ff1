"""The docker's advanced settings, folded: steps, CFG scale, sampler, which of them follow the model
(choices.py), and a button that hands them back to it."""

from __future__ import annotations

from ..choices import FOLLOWS_MODEL
from ..controller import Controller
from ..qt import QComboBox, QDoubleSpinBox, QFormLayout, QPushButton, QSpinBox
from ..requests import Settings
from .base import Changed, Choice, FoldingSection, fill_combo, narrow, wrapping_label

LABELS = {"steps": "steps", "cfg_scale": "CFG scale", "scheduler": "sampler"}
CFG_DECIMALS = 2


class AdvancedSection(FoldingSection):
    """Steps, CFG scale and sampler."""

    def __init__(self, controller: Controller, changed: Changed):
        super().__init__(controller, "advanced", "Advanced", open_by_default=False)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.steps = QSpinBox()
        self.steps.setRange(1, 150)
        self.cfg = QDoubleSpinBox()
        self.cfg.setRange(0.0, 30.0)
        self.cfg.setDecimals(CFG_DECIMALS)
        self.cfg.setSingleStep(0.5)
        self.scheduler = narrow(QComboBox())
        for widget in (self.steps, self.cfg):
            widget.valueChanged.connect(changed)
        self.scheduler.currentIndexChanged.connect(changed)
        form.addRow("Steps", self.steps)
        form.addRow("CFG scale", self.cfg)
        form.addRow("Sampler", self.scheduler)
        self.rows.addLayout(form)
        self.origin = wrapping_label()
        self.rows.addWidget(self.origin)
        self.reset = QPushButton("Model's settings")
        self.reset.setToolTip("Steps, CFG scale and sampler as the model (and the style) recommend them")
        self.reset.clicked.connect(lambda: controller.forget_changes())
        self.rows.addWidget(self.reset)

    def load(self, settings: Settings) -> None:
        self.steps.setValue(settings.steps)
        if round(self.cfg.value(), CFG_DECIMALS) != round(settings.cfg_scale, CFG_DECIMALS):
            self.cfg.setValue(settings.cfg_scale)
        index = self.scheduler.findData(settings.scheduler)
        if index >= 0:
            self.scheduler.setCurrentIndex(index)

    def store(self, settings: Settings) -> None:
        settings.steps = self.steps.value()
        # The box shows two decimals: a model's 4.567 is not the artist's 4.57.
        if round(self.cfg.value(), CFG_DECIMALS) != round(settings.cfg_scale, CFG_DECIMALS):
            settings.cfg_scale = self.cfg.value()
        if self.scheduler.currentData():
            settings.scheduler = self.scheduler.currentData()

    def refresh(self) -> None:
        welcome = self.controller.server.welcome
        if welcome is not None:
            labels = welcome.scheduler_labels
            choices = [Choice(labels.get(name, name), name) for name in welcome.schedulers]
            fill_combo(self.scheduler, choices, self.controller.settings.scheduler)
        choices = self.controller.choices
        yours = [LABELS[name] for name in FOLLOWS_MODEL if name in choices.touched]
        model = [LABELS[name] for name in FOLLOWS_MODEL if name not in choices.touched]
        parts = ([f"Chosen: {', '.join(yours)}."] if yours else []) + (
            [f"As the model recommends: {', '.join(model)}."] if model else [])
        self.origin.setText(" ".join(parts))
        self.reset.setEnabled(bool(yours))
