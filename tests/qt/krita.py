"""Stand-in for Krita's `krita` module, built on the Qt binding of the Krita it plays (pykrita.py).

It holds what the plugin calls and behaves the way Krita does where the plugin depends on it:
8-bit layers keep BGRA bytes, `pixelData` answers a QByteArray and `setPixelData` takes bytes,
`projection` and `thumbnail` answer QImages, annotations keep bytes, the docker factory calls its
class (or any callable) for each docker. Playing Krita 6 it also refuses PyQt5 as Krita 6 does.
Layers are canvas-sized and 8-bit whatever colour space they are told; the canvas shows the top
visible pixel that is not transparent.
"""

from __future__ import annotations

import enum
import sys
import tempfile

import pykrita

QT_MAJOR = pykrita.qt_major_version() if hasattr(pykrita, "qt_major_version") else 5
if QT_MAJOR == 6:
    from PyQt6 import QtCore, QtGui, QtWidgets

    class _RefusePyQt5:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "PyQt5":
                raise ModuleNotFoundError("This version of Krita is not compatible with PyQt5!")
            return None

    sys.meta_path.insert(0, _RefusePyQt5())
else:
    from PyQt5 import QtCore, QtGui, QtWidgets

APPLICATION = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["krita"])
SRGB_PROFILE = "sRGB-elle-V2-srgbtrc.icc"


class DockWidget(QtWidgets.QDockWidget):
    def canvasChanged(self, canvas) -> None:
        pass


class DockWidgetFactoryBase:
    class DockPosition(enum.Enum):
        DockTornOff, DockTop, DockBottom, DockRight, DockLeft, DockMinimized = range(6)

    if QT_MAJOR == 5:  # Krita 5's bindings also know the unscoped names; Krita 6's do not
        DockRight = DockPosition.DockRight

    def __init__(self, id: str, position: DockPosition):
        self.id, self.position = id, position


class DockWidgetFactory(DockWidgetFactoryBase):
    def __init__(self, id: str, position, klass):
        super().__init__(id, position)
        self.klass = klass

    def createDockWidget(self):
        return self.klass()


class Extension(QtCore.QObject):
    def __init__(self, parent):
        super().__init__(parent)


class Selection:
    def __init__(self, width: int, height: int):
        self._width, self._height = width, height
        self._coverage = bytearray(width * height)

    def select(self, x: int, y: int, width: int, height: int, value: int) -> None:
        for row in range(y, y + height):
            self._coverage[row * self._width + x:row * self._width + x + width] = bytes([value]) * width

    def _box(self) -> tuple[int, int, int, int]:
        covered = [i for i, v in enumerate(self._coverage) if v]
        if not covered:
            return 0, 0, 0, 0
        xs, ys = [i % self._width for i in covered], [i // self._width for i in covered]
        return min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1

    def x(self) -> int:
        return self._box()[0]

    def y(self) -> int:
        return self._box()[1]

    def width(self) -> int:
        return self._box()[2]

    def height(self) -> int:
        return self._box()[3]

    def pixelData(self, x: int, y: int, width: int, height: int) -> QtCore.QByteArray:
        return QtCore.QByteArray(_crop(bytes(self._coverage), self._width, x, y, width, height, 1))


class Node:
    def __init__(self, document: Document, name: str, kind: str = "paintlayer"):
        self._document, self._name, self._type = document, name, kind
        self._pixels = bytearray(document.width() * document.height() * 4)
        self._visible, self._locked, self._blending = True, False, "normal"
        self._space = (document.colorModel(), document.colorDepth(), document.colorProfile())
        self._children: list[Node] = []
        self._parent: Node | None = None
        self._id = QtCore.QUuid.createUuid()

    def name(self) -> str:
        return self._name

    def setName(self, name: str) -> None:
        self._name = name

    def type(self) -> str:
        return self._type

    def uniqueId(self) -> QtCore.QUuid:
        return self._id

    def visible(self) -> bool:
        return self._visible

    def setVisible(self, visible: bool) -> None:
        self._visible = visible

    def locked(self) -> bool:
        return self._locked

    def setLocked(self, locked: bool) -> None:
        self._locked = locked

    def opacity(self) -> int:
        return 255

    def blendingMode(self) -> str:
        return self._blending

    def setBlendingMode(self, mode: str) -> None:
        self._blending = mode

    def colorModel(self) -> str:
        return self._space[0]

    def colorDepth(self) -> str:
        return "U8"  # what its bytes are, whatever space it was told

    def setColorSpace(self, model: str, depth: str, profile: str) -> bool:
        self._space = (model, depth, profile)
        return True

    def channels(self) -> list[str]:
        return ["blue", "green", "red", "alpha"]

    def childNodes(self) -> list[Node]:
        return list(self._children)

    def parentNode(self) -> Node | None:
        return self._parent

    def addChildNode(self, child: Node, above: Node | None) -> bool:
        child._parent = self
        self._children.insert(self._children.index(above) + 1 if above is not None else 0, child)
        return True

    def pixelData(self, x: int, y: int, width: int, height: int) -> QtCore.QByteArray:
        return QtCore.QByteArray(_crop(bytes(self._pixels), self._document.width(), x, y, width, height, 4))

    projectionPixelData = pixelData

    def setPixelData(self, data: bytes, x: int, y: int, width: int, height: int) -> None:
        data, stride = bytes(data), self._document.width() * 4
        for row in range(height):
            start = (y + row) * stride + x * 4
            self._pixels[start:start + width * 4] = data[row * width * 4:(row + 1) * width * 4]

    def bounds(self) -> QtCore.QRect:
        alpha = self._pixels[3::4]
        covered = [i for i, a in enumerate(alpha) if a]
        if not covered:
            return QtCore.QRect()
        width = self._document.width()
        xs, ys = [i % width for i in covered], [i // width for i in covered]
        return QtCore.QRect(min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1)

    def thumbnail(self, width: int, height: int) -> QtGui.QImage:
        return _bgra_image(bytes(self._pixels), self._document.width(), self._document.height()).scaled(
            width, height, QtCore.Qt.AspectRatioMode.KeepAspectRatio, QtCore.Qt.TransformationMode.SmoothTransformation)


class Document:
    def __init__(self, width: int, height: int, name: str, model: str, depth: str, profile: str):
        self._width, self._height, self._name = width, height, name
        self._space = (model, depth, profile)
        self._root = Node(self, "root", "grouplayer")
        self._root.addChildNode(Node(self, "Background"), None)
        self._active: Node | None = None
        self._selection: Selection | None = None
        self._annotations: dict[str, bytes] = {}

    def name(self) -> str:
        return self._name

    def width(self) -> int:
        return self._width

    def height(self) -> int:
        return self._height

    def colorModel(self) -> str:
        return self._space[0]

    def colorDepth(self) -> str:
        return self._space[1]

    def colorProfile(self) -> str:
        return self._space[2]

    def rootNode(self) -> Node:
        return self._root

    def activeNode(self) -> Node | None:
        return self._active

    def setActiveNode(self, node: Node) -> None:
        self._active = node

    def createNode(self, name: str, kind: str) -> Node:
        return Node(self, name, kind)

    def selection(self) -> Selection | None:
        return self._selection

    def setSelection(self, selection: Selection) -> None:
        self._selection = selection

    def waitForDone(self) -> None:
        pass

    def pixelData(self, x: int, y: int, width: int, height: int) -> QtCore.QByteArray:
        return QtCore.QByteArray(_crop(self._composite(), self._width, x, y, width, height, 4))

    def projection(self, x: int, y: int, width: int, height: int) -> QtGui.QImage:
        return _bgra_image(bytes(self.pixelData(x, y, width, height)), width, height)

    def annotationTypes(self) -> list[str]:
        return list(self._annotations)

    def annotation(self, kind: str) -> QtCore.QByteArray:
        return QtCore.QByteArray(self._annotations[kind])

    def setAnnotation(self, kind: str, description: str, data: QtCore.QByteArray) -> None:
        self._annotations[kind] = bytes(data)

    def _composite(self) -> bytes:
        out = bytearray(self._width * self._height * 4)
        stack = [self._root]
        layers = []
        while stack:
            node = stack.pop()
            if node._visible:
                layers.append(node)
                stack.extend(node._children)
        for layer in sorted(layers, key=self._depth_order):
            pixels = layer._pixels
            for i in range(0, len(pixels), 4):
                if pixels[i + 3]:
                    out[i:i + 4] = pixels[i:i + 4]
        return bytes(out)

    def _depth_order(self, node: Node) -> list[int]:
        """Bottom to top: a node's path of indices from the root."""
        path = []
        while node._parent is not None:
            path.insert(0, node._parent._children.index(node))
            node = node._parent
        return path


class Krita(QtCore.QObject):
    _instance: Krita | None = None

    def __init__(self) -> None:
        super().__init__()
        self.settings: dict[tuple[str, str], str] = {}
        self.factories: list[DockWidgetFactory] = []
        self._extensions: list[Extension] = []
        self._documents: list[Document] = []
        self._resources: str | None = None

    @classmethod
    def instance(cls) -> Krita:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def version(self) -> str:
        return "6.0.1" if QT_MAJOR == 6 else "5.2.6"

    def getAppDataLocation(self) -> str:
        """Krita's resource folder: a fresh one for each process, as for a new user."""
        if self._resources is None:
            self._resources = tempfile.mkdtemp(prefix="krita-resources-")
        return self._resources

    def readSetting(self, group: str, key: str, default: str) -> str:
        return self.settings.get((group, key), default)

    def writeSetting(self, group: str, key: str, value: str) -> None:
        self.settings[group, key] = value

    def addExtension(self, extension: Extension) -> None:
        self._extensions.append(extension)

    def extensions(self) -> list[Extension]:
        return list(self._extensions)

    def addDockWidgetFactory(self, factory: DockWidgetFactory) -> None:
        self.factories.append(factory)

    def createDocument(self, width: int, height: int, name: str, model: str, depth: str, profile: str,
                       resolution: float) -> Document:
        document = Document(width, height, name, model, depth, profile)
        self._documents.append(document)
        return document

    def documents(self) -> list[Document]:
        return list(self._documents)

    def activeDocument(self) -> Document | None:
        return None  # no window, so no active view: as in kritarunner

    def windows(self) -> list:
        return []


def _crop(data: bytes, width: int, x: int, y: int, w: int, h: int, channels: int) -> bytes:
    stride = width * channels
    return b"".join(data[(y + row) * stride + x * channels:(y + row) * stride + (x + w) * channels]
                    for row in range(h))


def _bgra_image(bgra: bytes, width: int, height: int) -> QtGui.QImage:
    """Krita's QImages: 8-bit BGRA in memory is Qt's ARGB32 on little-endian machines."""
    return QtGui.QImage(bgra, width, height, width * 4, QtGui.QImage.Format.Format_ARGB32).copy()
