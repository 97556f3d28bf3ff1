"""What of the docker a person could not read: a horizontal scrollbar, a widget reaching beyond the
visible width, a widget squeezed below the smallest size it can draw itself in, a label whose text
neither fits nor wraps into its height. Only widgets shown count; Qt's own inner widgets (named
qt_...) are judged through the widget that holds them.

Shared by the GUI Krita scenario (tests/krita/scenarios.py, the docker where Krita docks it) and the
Qt checks under PyQt5 and PyQt6 (tests/qt/checks.py, the docker at a given width): it takes Qt from
the plugin's own qt.py.
"""

from __future__ import annotations

from underpaint_krita.qt import QtWidgets

SQUEEZABLE = (QtWidgets.QAbstractButton, QtWidgets.QLabel, QtWidgets.QComboBox, QtWidgets.QLineEdit,
              QtWidgets.QAbstractSpinBox)


def problems(docker) -> dict:
    """The problems found, with the sizes they were found at."""
    scroll = docker.widget()
    if not isinstance(scroll, QtWidgets.QScrollArea):
        return {"problems": [f"not a scroll area: {type(scroll).__name__}"]}
    viewport = scroll.viewport()
    found = []
    if scroll.horizontalScrollBar().isVisible():
        found.append("horizontal scrollbar shown")
    for widget in scroll.widget().findChildren(QtWidgets.QWidget):
        if not widget.isVisibleTo(docker) or widget.objectName().startswith("qt_"):
            continue
        said = widget.text() if isinstance(widget, (QtWidgets.QAbstractButton, QtWidgets.QLabel)) else ""
        name = f"{type(widget).__name__} {said!r}"
        left = widget.mapTo(viewport, widget.rect().topLeft()).x()
        if left < 0 or left + widget.width() > viewport.width():
            found.append(f"{name}: x {left}..{left + widget.width()} beyond 0..{viewport.width()}")
        hint = widget.minimumSizeHint()
        wraps = isinstance(widget, QtWidgets.QLabel) and widget.wordWrap()  # judged by its words below
        if isinstance(widget, SQUEEZABLE) and not wraps and (widget.width() < hint.width()
                                                             or widget.height() < hint.height()):
            found.append(f"{name}: {widget.width()}x{widget.height()} below its smallest "
                         f"{hint.width()}x{hint.height()}")
        if isinstance(widget, QtWidgets.QLabel) and widget.text():
            found.extend(_label_problems(widget, name))
    return {"problems": found, "viewport": [viewport.width(), viewport.height()],
            "docker": [docker.width(), docker.height()], "floating": docker.isFloating()}


def _label_problems(label, name: str) -> list[str]:
    """A label's text must fit its width, or wrap at spaces (a word wider than the label is cut off)
    into its height."""
    room, metrics = label.contentsRect(), label.fontMetrics()
    if not label.wordWrap():
        wide = metrics.horizontalAdvance(label.text())
        return [f"{name}: text {wide} px wide in {room.width()}"] if wide > room.width() else []
    found = []
    widest = max(label.text().split(), key=metrics.horizontalAdvance)
    if metrics.horizontalAdvance(widest) > room.width():
        found.append(f"{name}: the word {widest!r} is wider than {room.width()} px")
    needed = label.heightForWidth(label.width())
    if needed > label.height():
        found.append(f"{name}: wraps to {needed} px high in {label.height()}")
    return found
