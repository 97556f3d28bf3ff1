"""What every section of the docker is: a column of widgets over the controller, and the pieces that
keep the docker narrow enough for Krita's right column (docs/plugin.md, "A docker that fits").

Krita docks the docker under Layers and Brush Presets, about 260 px wide: every row here fits in
MIN_WIDTH, combo boxes shrink to a few characters, labels wrap, and a section the artist does not
need now folds to its header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..controller import Controller
from ..preferences import OPEN_SECTIONS
from ..qt import QComboBox, QLabel, QSizePolicy, Qt, QToolButton, QVBoxLayout, QWidget
from ..requests import Settings

USER_ROLE = Qt.ItemDataRole.UserRole  # where list items keep the id of what they show
Changed = Callable[..., None]  # a docker callback that takes whatever a Qt signal passes
MIN_WIDTH = 200  # the docker's narrowest width with nothing cut off (a test checks it in Krita)
COMBO_CHARACTERS = 6  # what a combo box still shows when squeezed; its list opens wider
SPACING = 4
# The sections open on a first start: what an artist needs for a first picture.
DEFAULT_OPEN = ("prompt", "results")


class Section(QWidget):
    """One part of the docker, its widgets in a column without margins of its own."""

    def __init__(self, controller: Controller):
        super().__init__()
        self.controller = controller
        self.column = QVBoxLayout(self)
        self.column.setContentsMargins(0, 0, 0, 0)
        self.column.setSpacing(SPACING)

    def load(self, settings: Settings) -> None:
        """Show `settings` in this section's widgets (only what differs: the artist may be typing)."""

    def store(self, settings: Settings) -> None:
        """Write what this section's widgets say into `settings`."""

    def refresh(self) -> None:
        """Show the controller's state."""


class FoldingSection(Section):
    """A section whose body folds away under a title the artist clicks; whether it is open outlives
    Krita (preferences.OPEN_SECTIONS). `self.rows` is the body's column."""

    def __init__(self, controller: Controller, name: str, title: str, open_by_default: bool):
        super().__init__(controller)
        self.name = name
        self.toggle = QToolButton()
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setAutoRaise(True)
        self.toggle.setStyleSheet("QToolButton { border: none; }")  # a title, not a pressed button, when open
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        font = self.toggle.font()
        font.setBold(True)
        self.toggle.setFont(font)
        self.column.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignLeft)
        self.body = QWidget()
        self.rows = QVBoxLayout(self.body)
        self.rows.setContentsMargins(0, 0, 0, 0)
        self.rows.setSpacing(SPACING)
        self.column.addWidget(self.body)
        self.toggle.toggled.connect(self._unfold)
        stored = controller.preferences.read(OPEN_SECTIONS)
        shown = name in stored.split(",") if stored is not None else open_by_default
        self.toggle.setChecked(shown)
        self._unfold(shown, remember=False)

    def _unfold(self, shown: bool, remember: bool = True) -> None:
        self.body.setVisible(shown)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        if remember:
            stored = self.controller.preferences.read(OPEN_SECTIONS)
            # Nothing stored yet: the other sections keep their defaults.
            others = [n for n in (stored.split(",") if stored is not None else DEFAULT_OPEN) if n and n != self.name]
            self.controller.preferences.write(OPEN_SECTIONS, ",".join(others + ([self.name] if shown else [])))


def wrapping_label(text: str = "") -> QLabel:
    """A label that wraps to the docker's width instead of widening it."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(1)
    return label


def narrow(combo: QComboBox) -> QComboBox:
    """A combo box as narrow as COMBO_CHARACTERS, however long its entries (the list opens wider)."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(COMBO_CHARACTERS)
    return combo


@dataclass(frozen=True)
class Choice:
    """One entry of a combo box: what it says, the data it stands for, its tooltip, whether it can
    be picked (a greyed entry only informs)."""

    text: str
    data: str
    tooltip: str = ""
    enabled: bool = True


def fill_combo(combo: QComboBox, choices: list[Choice], current: str) -> None:
    """Show `choices`, rebuilt only when they differ, with `current`'s data selected."""
    shown = [Choice(combo.itemText(i), combo.itemData(i), combo.itemData(i, Qt.ItemDataRole.ToolTipRole) or "",
                    _enabled(combo, i)) for i in range(combo.count())]
    if shown != choices:
        combo.clear()
        for choice in choices:
            combo.addItem(choice.text, choice.data)
            index = combo.count() - 1
            if choice.tooltip:
                combo.setItemData(index, choice.tooltip, Qt.ItemDataRole.ToolTipRole)
            if not choice.enabled:
                item = combo.model().item(index)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled & ~Qt.ItemFlag.ItemIsSelectable)
    index = combo.findData(current)
    if index >= 0:
        combo.setCurrentIndex(index)


def _enabled(combo: QComboBox, index: int) -> bool:
    return bool(combo.model().item(index).flags() & Qt.ItemFlag.ItemIsEnabled)
