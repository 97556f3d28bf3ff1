"""The dialog that edits a style: its name, prompt template, negative prompt, model, sampler, steps,
CFG scale and LoRAs. "Model's choice" leaves a setting to the model's recommendation."""

from __future__ import annotations

from ..controller import ServerState
from ..qt import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QWidget,
)
from ..styles import PLACEHOLDER, Style, format_loras, parse_loras
from .base import Choice, fill_combo

ANY = "Model's choice"


class StyleDialog(QDialog):
    def __init__(self, parent: QWidget, title: str, style: Style, server: ServerState):
        super().__init__(parent)
        self.setWindowTitle(title)
        form = QFormLayout(self)
        self.name = QLineEdit(style.name)
        self.prompt = QPlainTextEdit(style.prompt)
        self.prompt.setToolTip(f"Your prompt goes where {PLACEHOLDER} is, e.g. “{PLACEHOLDER}, oil painting”")
        self.negative = QPlainTextEdit(style.negative_prompt)
        self.negative.setToolTip("Added to your negative prompt")
        for box in (self.prompt, self.negative):
            box.setTabChangesFocus(True)
            box.setFixedHeight(box.fontMetrics().lineSpacing() * 3 + 12)
        self.model = QComboBox()
        fill_combo(self.model, [Choice("Any model", "")] + [Choice(name, name) for name in server.models], style.model)
        if style.model and self.model.currentData() != style.model:  # a model this server does not have
            self.model.addItem(style.model, style.model)
            self.model.setCurrentIndex(self.model.count() - 1)
        self.sampler = QComboBox()
        welcome = server.welcome
        samplers = welcome.schedulers if welcome is not None else []
        labels = welcome.scheduler_labels if welcome is not None else {}
        fill_combo(self.sampler, [Choice(ANY, "")] + [Choice(labels.get(n, n), n) for n in samplers], style.sampler)
        self.steps = QSpinBox()
        self.steps.setRange(0, 150)
        self.steps.setSpecialValueText(ANY)  # shown for 0
        self.steps.setValue(style.steps or 0)
        self.cfg = QDoubleSpinBox()
        self.cfg.setRange(0.0, 30.0)
        self.cfg.setSingleStep(0.5)
        self.cfg.setSpecialValueText(ANY)
        self.cfg.setValue(style.cfg_scale or 0.0)
        self.loras = QLineEdit(format_loras(style.loras))
        self.loras.setPlaceholderText("name:0.8, other:0.5")
        self.loras.setToolTip("LoRAs added to every prompt of this style, each with its strength")
        for label, widget in (("Name", self.name), ("Prompt", self.prompt), ("Negative", self.negative),
                              ("Model", self.model), ("Sampler", self.sampler), ("Steps", self.steps),
                              ("CFG scale", self.cfg), ("LoRAs", self.loras)):
            form.addRow(label, widget)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        form.addRow(buttons)

    def style(self) -> Style:
        return Style(name=self.name.text().strip(), prompt=self.prompt.toPlainText().strip() or PLACEHOLDER,
                     negative_prompt=self.negative.toPlainText().strip(), model=self.model.currentData() or "",
                     sampler=self.sampler.currentData() or "", steps=self.steps.value() or None,
                     cfg_scale=self.cfg.value() or None, loras=parse_loras(self.loras.text()))
