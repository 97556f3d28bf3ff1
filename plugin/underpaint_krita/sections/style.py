"""The docker's first row: the style (styles.py), and a menu to save the current settings as a
style, edit the chosen one or delete it."""

from __future__ import annotations

from ..controller import Controller
from ..qt import QComboBox, QHBoxLayout, QMenu, QMessageBox, QToolButton
from ..styles import describe, style_from_settings
from .base import Choice, Section, fill_combo, narrow
from .style_dialog import StyleDialog

NO_STYLE = "No style"


class StyleSection(Section):
    """The style picker and its Save as / Edit / Delete menu."""

    def __init__(self, controller: Controller):
        super().__init__(controller)
        row = QHBoxLayout()
        self.picker = narrow(QComboBox())
        self.picker.setToolTip("A style: prompt template, negative prompt, LoRAs and, where it says, the model, "
                               "sampler, steps and CFG scale")
        self.picker.activated.connect(lambda index: controller.choose_style(self.picker.itemData(index)))
        self.menu_button = QToolButton()
        self.menu_button.setText("⋯")
        self.menu_button.setToolTip("Save the current settings as a style, edit or delete the style")
        self.menu_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.menu_button)
        self.save_action = menu.addAction("Save as a new style…")
        self.edit_action = menu.addAction("Edit this style…")
        self.delete_action = menu.addAction("Delete this style…")
        for action, slot in ((self.save_action, self.save_as), (self.edit_action, self.edit),
                             (self.delete_action, self.delete)):
            action.triggered.connect(lambda _=False, slot=slot: slot())
        self.menu_button.setMenu(menu)
        row.addWidget(self.picker, 1)
        row.addWidget(self.menu_button)
        self.column.addLayout(row)
        self.dialog: StyleDialog | None = None  # the one open, for the tests to fill in
        self.confirm: QMessageBox | None = None

    def refresh(self) -> None:
        choices = self.controller.choices
        library = choices.library
        fill_combo(self.picker, [Choice(NO_STYLE, "", "Your prompt as you write it")]
                   + [Choice(name, name, describe(library.get(name))) for name in library.names()],
                   choices.style.name if choices.style is not None else "")
        self.edit_action.setEnabled(choices.style is not None)
        self.delete_action.setEnabled(choices.style is not None)

    def save_as(self) -> None:
        choices = self.controller.choices
        base = choices.style
        name = f"{base.name} (mine)" if base is not None else "My style"
        self._open(StyleDialog(self, "New style", style_from_settings(name, choices.settings, base),
                               self.controller.server), replacing=None)

    def edit(self) -> None:
        style = self.controller.choices.style
        if style is not None:
            self._open(StyleDialog(self, "Edit style", style, self.controller.server), replacing=style.name)

    def delete(self) -> None:
        style = self.controller.choices.style
        if style is None:
            return
        buttons = QMessageBox.StandardButton
        confirm = QMessageBox(QMessageBox.Icon.Question, "Delete style", f"Delete the style “{style.name}”?",
                              buttons.Yes | buttons.Cancel, self)
        confirm.finished.connect(lambda _: confirm.standardButton(confirm.clickedButton()) == buttons.Yes
                                 and self.controller.delete_style(style.name))
        self.confirm = confirm
        confirm.open()

    def _open(self, dialog: StyleDialog, replacing: str | None) -> None:
        self.dialog = dialog
        dialog.accepted.connect(lambda: self.controller.save_style(dialog.style(), replacing))
        dialog.open()
