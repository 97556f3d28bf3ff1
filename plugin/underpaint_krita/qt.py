"""The Qt binding of the Krita the plugin runs in: PyQt6 in Krita 6, PyQt5 in Krita 5.

Every other module of the plugin takes Qt from here and never names PyQt5 or PyQt6 (a test
checks). Krita 6's `krita` module refuses any import of PyQt5 ("This version of Krita is not
compatible with PyQt5!"), and in Krita 5 a PyQt6 found on the system would load a second Qt into
Krita's process.

Which binding: Krita's `pykrita` module says, through `qt_major_version()`, from Krita 6 on; a
pykrita without it (Krita 5.x) means Qt 5, and so does no pykrita at all (plain Python; the tests
put a stand-in pykrita in place to run the plugin under PyQt6).

One spelling serves both bindings, so no other module asks which one it got:
- enums fully qualified (`Qt.AlignmentFlag.AlignCenter`): PyQt6 knows only these, and PyQt5 5.15,
  which every Krita 5 ships, knows them too (as do Krita's own bindings:
  `DockWidgetFactoryBase.DockPosition.DockRight`);
- `QAction` is in QtGui in Qt 6 and in QtWidgets in Qt 5: it is taken from here;
- `exec()`, not `exec_()`; `QRegularExpression`, not `QRegExp` (gone in Qt 6);
- `QImage.sizeInBytes()`, not `byteCount()` (gone in Qt 6; qimage.py reads pixel buffers);
- bytes go wherever a QByteArray is expected (`setPixelData`, `setAnnotation`) and `bytes(...)`
  reads one (`pixelData`, `annotation`) in both bindings.

Why not vendor qtpy: it bridges the other way, making Qt 6 look like Qt 5 by changing PyQt6's own
classes (`promote_enums` copies every enum member onto its class, `exec_` aliases are added), and
Krita runs all its plugins in one Python, so every other plugin would see a patched PyQt6. It would
also add dozens of modules to vendor/ for the forty names the plugin uses.
"""

from __future__ import annotations


def qt_major_version() -> int:
    """5 or 6: the Qt of the Krita running this, 5 outside Krita."""
    try:
        import pykrita
    except ImportError:
        return 5
    asked = getattr(pykrita, "qt_major_version", None)
    return 5 if asked is None else int(asked())


if qt_major_version() >= 6:
    from PyQt6 import QtCore, QtGui, QtWidgets

    QAction = QtGui.QAction
else:
    from PyQt5 import QtCore, QtGui, QtWidgets

    QAction = QtWidgets.QAction

BINDING = QtCore.__name__.split(".")[0]  # "PyQt5" or "PyQt6"

QByteArray = QtCore.QByteArray
QEvent = QtCore.QEvent
QObject = QtCore.QObject
QPointF = QtCore.QPointF
QRegularExpression = QtCore.QRegularExpression
QSize = QtCore.QSize
Qt = QtCore.Qt
QTimer = QtCore.QTimer

QColor = QtGui.QColor
QIcon = QtGui.QIcon
QImage = QtGui.QImage
QImageReader = QtGui.QImageReader
QPainter = QtGui.QPainter
QPen = QtGui.QPen
QPixmap = QtGui.QPixmap
QPolygonF = QtGui.QPolygonF
QRegularExpressionValidator = QtGui.QRegularExpressionValidator

QApplication = QtWidgets.QApplication
QCheckBox = QtWidgets.QCheckBox
QComboBox = QtWidgets.QComboBox
QDialog = QtWidgets.QDialog
QDialogButtonBox = QtWidgets.QDialogButtonBox
QDoubleSpinBox = QtWidgets.QDoubleSpinBox
QFileDialog = QtWidgets.QFileDialog
QFormLayout = QtWidgets.QFormLayout
QHBoxLayout = QtWidgets.QHBoxLayout
QInputDialog = QtWidgets.QInputDialog
QLabel = QtWidgets.QLabel
QLineEdit = QtWidgets.QLineEdit
QListView = QtWidgets.QListView
QListWidget = QtWidgets.QListWidget
QListWidgetItem = QtWidgets.QListWidgetItem
QMenu = QtWidgets.QMenu
QMessageBox = QtWidgets.QMessageBox
QPlainTextEdit = QtWidgets.QPlainTextEdit
QProgressBar = QtWidgets.QProgressBar
QPushButton = QtWidgets.QPushButton
QScrollArea = QtWidgets.QScrollArea
QSizePolicy = QtWidgets.QSizePolicy
QSlider = QtWidgets.QSlider
QSpinBox = QtWidgets.QSpinBox
QToolButton = QtWidgets.QToolButton
QVBoxLayout = QtWidgets.QVBoxLayout
QWidget = QtWidgets.QWidget
