"""The docker's prompt section: the model (refused files greyed, with the reason), the prompt with
the recent prompts (Ctrl+Up / Ctrl+Down, or the Recent menu), the negative prompt, and a picker
that puts LoRAs and embeddings into the prompt; its last entry opens the Train dialog, which makes new
ones from the artist's pictures (train_dialog.py)."""

from __future__ import annotations

from .. import naming, networks
from ..controller import Controller
from ..qt import QComboBox, QEvent, QHBoxLayout, QMenu, QObject, QPlainTextEdit, Qt, QToolButton
from ..requests import Settings
from .base import Changed, Choice, FoldingSection, fill_combo, narrow
from .train_dialog import TrainDialog

RECENT_CHARS = 60
TRAIN = "Train…"  # the LoRA menu's entry that opens the Train dialog


class PromptSection(FoldingSection):
    """The model, the prompt and the negative prompt; LoRAs and recent prompts."""

    def __init__(self, controller: Controller, changed: Changed):
        super().__init__(controller, "prompt", "Prompt", open_by_default=True)
        self.model = narrow(QComboBox())
        self.model.setToolTip("The model that paints")
        self.model.currentIndexChanged.connect(changed)
        self.rows.addWidget(self.model)
        self.text = _text_box("Prompt: what should appear", 3)
        self.text.setToolTip("Ctrl+Up / Ctrl+Down: your recent prompts")
        self._recall = _RecentKeys(self)
        self.text.installEventFilter(self._recall)
        self.negative = _text_box("Negative prompt: what to avoid", 2)
        for box in (self.text, self.negative):
            box.textChanged.connect(changed)
            self.rows.addWidget(box)
        tools = QHBoxLayout()
        self.networks = _menu_button("LoRA", "LoRAs and embeddings for this model: click one to add it to the "
                                             "prompt where the cursor is, or train a new one")
        self.networks.menu().aboutToShow.connect(self._list_networks)
        self.recent = _menu_button("Recent", "Your last prompts; also Ctrl+Up / Ctrl+Down in the prompt")
        self.recent.menu().aboutToShow.connect(self._list_recent)
        self.train_dialog: TrainDialog | None = None
        tools.addWidget(self.networks)
        tools.addWidget(self.recent)
        tools.addStretch(1)
        self.rows.addLayout(tools)

    def load(self, settings: Settings) -> None:
        for box, text in ((self.text, settings.prompt), (self.negative, settings.negative_prompt)):
            if box.toPlainText() != text:
                box.setPlainText(text)

    def store(self, settings: Settings) -> None:
        settings.prompt = self.text.toPlainText()
        settings.negative_prompt = self.negative.toPlainText()
        if self.model.currentData():  # a greyed, refused model stands for none
            settings.model = self.model.currentData()

    def refresh(self) -> None:
        server = self.controller.server
        fill_combo(self.model, [Choice(name, name) for name in server.models]
                   + [Choice(f"{info.name} (cannot be used)", "", info.refused or "", enabled=False)
                      for info in server.refused], self.controller.settings.model)

    def recall(self, direction: int) -> None:
        """Show the prompt before (+1) or after (-1) the one in the box among the recent ones."""
        prompt = self.controller.choices.recent.step(self.text.toPlainText(), direction)
        if prompt is not None:
            self.text.setPlainText(prompt)

    def add_network(self, snippet: str) -> None:
        """Put a LoRA's tag or an embedding's name into the prompt at the cursor, spaced from its words."""
        cursor = self.text.textCursor()
        text, position = self.text.toPlainText(), cursor.position()
        cursor.insertText(networks.spaced(text[:position], text[position:], snippet))
        self.text.setTextCursor(cursor)
        self.text.setFocus()

    def _list_networks(self) -> None:
        menu = self.networks.menu()
        menu.clear()
        found = self.controller.networks()
        if not found:
            menu.addAction("No LoRA or embedding for this model").setEnabled(False)
        for kind, title in (("lora", "LoRAs"), ("embedding", "Embeddings")):
            of_kind = [info for info in found if info.kind == kind]
            if of_kind:
                menu.addSection(title)
            for info in of_kind:
                action = menu.addAction(networks.label(info))
                action.setEnabled(not info.refused)
                action.setToolTip(info.refused or networks.snippet(info))
                action.triggered.connect(self._adding(networks.snippet(info)))
        menu.addSeparator()
        train = menu.addAction(TRAIN)
        train.setToolTip("Teach the model your style, a character or an object from your pictures")
        train.triggered.connect(lambda *_: self.open_training())

    def open_training(self) -> TrainDialog:
        """Show the Train dialog (one per docker: it keeps its pictures when closed and opened again)."""
        if self.train_dialog is None:
            self.train_dialog = TrainDialog(self, self.controller, self.controller.workspace)
        self.train_dialog.show()
        self.train_dialog.raise_()
        return self.train_dialog

    def _adding(self, snippet: str) -> Changed:
        return lambda *_: self.add_network(snippet)

    def _list_recent(self) -> None:
        menu = self.recent.menu()
        menu.clear()
        prompts = self.controller.choices.recent.prompts
        if not prompts:
            menu.addAction("No prompt yet").setEnabled(False)
        for prompt in prompts:
            action = menu.addAction(naming.short_prompt(prompt, RECENT_CHARS))
            action.setToolTip(prompt)
            action.triggered.connect(lambda _=False, text=prompt: self.text.setPlainText(text))


class _RecentKeys(QObject):
    """Ctrl+Up / Ctrl+Down in the prompt box step through the recent prompts."""

    def __init__(self, section: PromptSection):
        super().__init__(section)
        self.section = section

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.KeyPress and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            step = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1}.get(event.key())
            if step is not None:
                self.section.recall(step)
                return True
        return False


def _text_box(placeholder: str, lines: int) -> QPlainTextEdit:
    box = QPlainTextEdit()
    box.setPlaceholderText(placeholder)
    box.setTabChangesFocus(True)
    box.setFixedHeight(box.fontMetrics().lineSpacing() * lines + 12)
    return box


def _menu_button(text: str, tooltip: str) -> QToolButton:
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tooltip)
    button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
    button.setMenu(QMenu(button))
    button.menu().setToolTipsVisible(True)
    return button
