"""The docker's prompt section: the model, the prompt, the negative prompt."""

from __future__ import annotations

from ..controller import Controller
from ..qt import QComboBox, QPlainTextEdit
from ..requests import Settings
from .base import Changed, Section, fill_combo


class PromptSection(Section):
    """The model, the prompt and the negative prompt."""

    def __init__(self, controller: Controller, changed: Changed):
        super().__init__(controller)
        self.model = QComboBox()
        self.model.setToolTip("The model that paints")
        self.model.currentTextChanged.connect(changed)
        self.column.addWidget(self.model)
        self.text = _text_box("Prompt: what should appear", 3)
        self.negative = _text_box("Negative prompt: what to avoid", 2)
        for box in (self.text, self.negative):
            box.textChanged.connect(changed)
            self.column.addWidget(box)

    def load(self, settings: Settings) -> None:
        self.text.setPlainText(settings.prompt)
        self.negative.setPlainText(settings.negative_prompt)

    def store(self, settings: Settings) -> None:
        settings.prompt = self.text.toPlainText()
        settings.negative_prompt = self.negative.toPlainText()
        if self.model.currentText():
            settings.model = self.model.currentText()

    def refresh(self) -> None:
        models = self.controller.server.models
        fill_combo(self.model, [(name, name) for name in models], self.controller.settings.model)


def _text_box(placeholder: str, lines: int) -> QPlainTextEdit:
    box = QPlainTextEdit()
    box.setPlaceholderText(placeholder)
    box.setTabChangesFocus(True)
    box.setFixedHeight(box.fontMetrics().lineSpacing() * lines + 12)
    return box
