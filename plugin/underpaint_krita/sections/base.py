"""What every section of the docker is: a column of widgets over the controller."""

from __future__ import annotations

from collections.abc import Callable

from ..controller import Controller
from ..qt import QComboBox, Qt, QVBoxLayout, QWidget
from ..requests import Settings

USER_ROLE = Qt.ItemDataRole.UserRole  # where list items keep the id of what they show
Changed = Callable[..., None]  # a docker callback that takes whatever a Qt signal passes


class Section(QWidget):
    """One part of the docker, its widgets in a column without margins of its own."""

    def __init__(self, controller: Controller):
        super().__init__()
        self.controller = controller
        self.column = QVBoxLayout(self)
        self.column.setContentsMargins(0, 0, 0, 0)

    def load(self, settings: Settings) -> None:
        """Show `settings` in this section's widgets."""

    def store(self, settings: Settings) -> None:
        """Write what this section's widgets say into `settings`."""

    def refresh(self) -> None:
        """Show the controller's state."""




def fill_combo(combo: QComboBox, choices: list[tuple[str, str]], current: str) -> None:
    """Show (text, data) `choices`, rebuilt only when they differ, with `current`'s data selected."""
    if [(combo.itemText(i), combo.itemData(i)) for i in range(combo.count())] != choices:
        combo.clear()
        for text, data in choices:
            combo.addItem(text, data)
    index = combo.findData(current)
    if index >= 0:
        combo.setCurrentIndex(index)
