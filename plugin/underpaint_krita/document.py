"""Krita glue: a krita.Document as the controller's `Document`, and Krita as its `Workspace`.

The only module besides the UI that touches the Krita API. Pixels cross here in both
directions: Krita's 8-bit layers are BGRA, the protocol is straight RGBA; documents in other
depths or colour models are read through Krita's own conversion to 8-bit sRGB, and results
are written into sRGB 8-bit layers that Krita converts into the document's colour space.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import TypeVar

from krita import Krita

from shared.crop import Rect
from shared.images import swap_red_blue, transparent
from shared.messages import Image

from . import layer_pixels, naming
from .layer_pixels import SRGB
from .qimage import as_rgba8, from_bgra, pixel_bytes, rgba_bytes, shrunk_in_bands, to_image
from .qt import QApplication, QByteArray, QEvent, QImage, QImageReader, QObject, Qt, QTimer
from .references import sent_size
from .training import Picture

HISTORY_ANNOTATION = "underpaint/history"
# The annotation of each list of linked layers is "underpaint/" + its key.
LIST_DESCRIPTIONS = {"regions": "Underpaint region prompts", "controls": "Underpaint control layers",
                     "references": "Underpaint reference pictures"}
# A picture file imported as a reference layer is read at most this large a side (a reference is sent at
# references.SIDE anyway): a photo of a hundred megapixels does not become a layer of 400 MB.
IMPORT_SIDE = 4096
QUICK_SIDE = 512  # thumbnail side for the quick change token
# Krita makes a layer added by a script the active one some time after control returns to its
# top-level event loop (seen 0.1-0.5 s later): the preview or a hidden layer is watched this long.
ACTIVATION_WATCH = 3.0
ACTIVATION_CHECK_MS = 10
# Image > Scale Image's filter for enlarging, as scripts name it.
SCALE_FILTER = "Bicubic"
T = TypeVar("T")


class KritaDocument:
    def __init__(self, document):  # a krita.Document
        self.document = document
        # Krita makes a newly added layer the active one; the artist's choice from before the
        # preview layer (or a hidden layer) appeared is where results go, and where the next stroke must go.
        self._artist_layer = None
        self._keep_active: _KeepActiveLayer | None = None
        self._hidden_layer = None  # the hidden layer added last, never to take the artist's place

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KritaDocument) and self.document == other.document

    __hash__ = None  # Krita's wrappers compare equal without a stable identity to hash

    # --- Canvas --------------------------------------------------------------------------------

    @property
    def size(self) -> tuple[int, int]:
        return self.document.width(), self.document.height()

    def selection_bounds(self) -> Rect | None:
        selection = self.document.selection()
        if selection is None or selection.width() <= 0 or selection.height() <= 0:
            return None
        return Rect(selection.x(), selection.y(), selection.width(), selection.height())

    def read_pixels(self, rect: Rect) -> bytes:
        return self._without_preview(lambda: self._projection(rect))

    def picture(self, side: int) -> Picture:
        """The canvas as it looks, without the preview layer, shrunk to at most side² pixels (read a
        band at a time)."""
        width, height = self.size
        image = self._without_preview(lambda: shrunk_in_bands(
            lambda y, rows: self._projection_image(Rect(0, y, width, rows)), width, height, side))
        return Picture(self.document.name() or "Untitled", image)

    def layer_pictures(self, side: int) -> list[Picture]:
        """Each visible top-level layer or group that holds pixels (not the preview), bottom first, as
        large as the canvas and shrunk to at most side² pixels."""
        self.document.waitForDone()
        return [Picture(node.name(), self._layer_picture(node, side))
                for node in self.document.rootNode().childNodes()
                if node.visible() and not naming.is_preview(node.name()) and not node.type().endswith("mask")
                and not node.bounds().isEmpty()]

    def change_token(self, rect: Rect) -> int:
        """A hash of the active layer's pixels in `rect` and of every layer's name, visibility and
        opacity: strokes land on the active layer, so this sees them without compositing."""
        token = self._structure_token()
        active = self.document.activeNode()
        if active is None or naming.is_preview(active.name()):
            return zlib.crc32(self.read_pixels(rect), token)  # no active layer (scripts): the composite
        return zlib.crc32(bytes(active.pixelData(rect.x, rect.y, rect.width, rect.height)), token)

    def quick_change_token(self) -> int:
        """A hash of a thumbnail of the active layer and of the layer stack. Krita keeps the layer's
        downscaled levels, so a 512 px thumbnail of a 4096² layer takes about 2 ms and shows even a
        3 px dab; the exact token backs it up for fainter changes."""
        active = self.document.activeNode()
        if active is None or naming.is_preview(active.name()):
            return self.change_token(Rect(0, 0, self.document.width(), self.document.height()))
        return zlib.crc32(pixel_bytes(active.thumbnail(QUICK_SIDE, QUICK_SIDE)), self._structure_token())

    def _structure_token(self) -> int:
        structure = []
        stack = list(self.document.rootNode().childNodes())
        while stack:
            node = stack.pop()
            if not naming.is_preview(node.name()):
                structure.append(f"{node.name()}|{node.visible()}|{node.opacity()}|{node.blendingMode()}")
                stack.extend(node.childNodes())
        return zlib.crc32("\n".join(structure).encode())

    def read_selection(self, rect: Rect) -> bytes:
        return bytes(self.document.selection().pixelData(rect.x, rect.y, rect.width, rect.height))

    def read_layer_alpha(self, layer_id: str, rect: Rect) -> bytes | None:
        return self._read_layer(layer_pixels.alpha, layer_id, rect)

    def read_layer_rgba(self, layer_id: str, rect: Rect) -> bytes | None:
        return self._read_layer(layer_pixels.rgba, layer_id, rect)

    def read_layer_picture(self, layer_id: str, side: int) -> Image | None:
        node = self._node(layer_id)
        if node is None:
            return None
        self.document.waitForDone()
        bounds = node.bounds()
        if bounds.isEmpty():
            return None
        x, y, width, height = bounds.x(), bounds.y(), bounds.width(), bounds.height()
        node = layer_pixels.in_rgba8(node)
        return shrunk_in_bands(lambda top, rows: from_bgra(layer_pixels.pixel_data(node, Rect(x, y + top, width, rows)),
                                                           width, rows), width, height, side, fit=sent_size)

    def _read_layer(self, read: Callable[..., bytes], layer_id: str, rect: Rect) -> bytes | None:
        node = self._node(layer_id)
        if node is None:
            return None
        self.document.waitForDone()
        return read(node, rect)

    # --- results --------------------------------------------------------------------------------

    def show_preview(self, name: str, image: Image) -> None:
        preview = self._preview()
        if preview is None:
            # The preview stays 8-bit sRGB whatever the document, so it can be rewritten in place.
            preview = self._layer(name, image, in_document_space=False)
            root = self.document.rootNode()
            children = root.childNodes()
            self._keeping_the_artists_layer(lambda: root.addChildNode(preview, children[-1] if children else None))
        else:
            old = preview.bounds()
            if old.width() > 0 and old.height() > 0:
                preview.setPixelData(transparent(old.width(), old.height()), old.x(), old.y(), old.width(),
                                     old.height())
            _write(preview, image)
            preview.setName(name)
        preview.setLocked(True)
        preview.setVisible(True)
        _recompose(preview)
        self.document.waitForDone()

    def hide_preview(self) -> None:
        preview = self._preview()
        if preview is not None and preview.visible():
            preview.setVisible(False)
            _recompose(preview)
            self.document.waitForDone()

    def add_result_layer(self, name: str, image: Image) -> None:
        self._insert(self._layer(name, image))

    def add_hidden_layer(self, name: str, image: Image) -> str:
        """Hidden before it is added, so adding it stays one undo step."""
        layer = self._layer(name, image)
        layer.setVisible(False)
        self._hidden_layer = layer
        self._keeping_the_artists_layer(lambda: self._insert(layer))
        return layer.uniqueId().toString()

    def scale_with_layer(self, scale: int, name: str, image: Image) -> None:
        """Krita's own Scale Image (every layer resampled, the resolution kept), then the picture as a new
        layer. Two undo steps: Krita 5.1's scripting API cannot group commands into one."""
        document = self.document
        document.scaleImage(document.width() * scale, document.height() * scale, int(document.xRes()),
                            int(document.yRes()), SCALE_FILTER)
        document.waitForDone()
        self.add_result_layer(name, as_rgba8(image))

    def load_history(self) -> bytes | None:
        return self._annotation(HISTORY_ANNOTATION)

    def save_history(self, blob: bytes) -> None:
        self._annotate(HISTORY_ANNOTATION, "Underpaint results", blob)

    def load_list(self, key: str) -> bytes | None:
        return self._annotation(f"underpaint/{key}")

    def save_list(self, key: str, blob: bytes) -> None:
        self._annotate(f"underpaint/{key}", LIST_DESCRIPTIONS[key], blob)

    def add_picture_layer(self, path: str, name: str) -> str | None:
        reader = QImageReader(path)
        reader.setAutoTransform(True)  # a photo's EXIF orientation, as a viewer shows it
        size = reader.size()
        if size.isValid() and max(size.width(), size.height()) > IMPORT_SIDE:
            reader.setScaledSize(size.scaled(IMPORT_SIDE, IMPORT_SIDE, Qt.AspectRatioMode.KeepAspectRatio))
        picture = reader.read()
        if picture.isNull():
            return None
        return self.add_hidden_layer(name, to_image(picture))  # a picture to take after, not part of the painting

    def layer_thumbnail(self, layer_id: str, side: int) -> Image | None:
        """Krita's own thumbnail of the layer (from its downscaled levels: a few ms, and it does not end
        a stroke), of the canvas's shape."""
        node = self._node(layer_id)
        if node is None:
            return None
        width, height = sent_size(*self.size, side)
        return to_image(node.thumbnail(width, height))

    def active_layer_id(self) -> str | None:
        active = self.document.activeNode()
        if active is None or naming.is_preview(active.name()) or active == self.document.rootNode():
            return None
        return active.uniqueId().toString()

    def layer_name(self, layer_id: str) -> str | None:
        node = self._node(layer_id)
        return node.name() if node is not None else None

    def busy(self) -> bool:
        """A pointer button is held or Krita has a stroke open or still being processed.

        tryBarrierLock is the one call of Krita 5.1's API that tells without ending the stroke:
        it fails while any stroke is open (a brush stroke from press to release, whatever the
        input device) or has work queued. Every other wait (waitForDone, command-based Node calls)
        ends the stroke first. The button check also covers drags that open no stroke."""
        if QApplication.mouseButtons() != Qt.MouseButton.NoButton:
            return True
        if not self.document.tryBarrierLock():
            return True
        self.document.unlock()
        return False

    # --- helpers -------------------------------------------------------------------------------

    def _without_preview(self, read: Callable[[], T]) -> T:
        """What `read` reads from the canvas with the preview layer hidden for it."""
        preview = self._preview()
        hidden = preview is not None and preview.visible()
        if hidden:
            preview.setVisible(False)
            _recompose(preview)
        self.document.waitForDone()
        try:
            return read()
        finally:
            if hidden:
                preview.setVisible(True)
                _recompose(preview)

    def _layer_picture(self, node, side: int) -> Image:
        """A layer or group as large as the canvas, in 8-bit RGBA, shrunk to at most side² pixels. Read
        from its pixels, a band at a time: Krita 5.1's Node.thumbnail does not map the canvas onto the
        size asked for (seen: a 40x30 square came out 40x23). A layer in another colour space is read
        from a converted copy, never converted itself."""
        node = layer_pixels.in_rgba8(node)
        width, height = self.size
        return shrunk_in_bands(lambda y, rows: from_bgra(layer_pixels.pixel_data(node, Rect(0, y, width, rows)),
                                                         width, rows), width, height, side)

    def _is_srgb8(self) -> bool:
        return (self.document.colorModel() == "RGBA" and self.document.colorDepth() == "U8"
                and "srgb" in self.document.colorProfile().lower())

    def _projection(self, rect: Rect) -> bytes:
        if self._is_srgb8():
            return swap_red_blue(bytes(self.document.pixelData(rect.x, rect.y, rect.width, rect.height)))
        return rgba_bytes(self._projection_image(rect))

    def _projection_image(self, rect: Rect) -> QImage:
        if self._is_srgb8():
            return from_bgra(bytes(self.document.pixelData(rect.x, rect.y, rect.width, rect.height)),
                             rect.width, rect.height)
        # Krita converts any depth and colour model to 8-bit sRGB for a QImage.
        return self.document.projection(rect.x, rect.y, rect.width, rect.height)

    def _layer(self, name: str, image: Image, in_document_space: bool = True):
        """A paint layer, not yet in the document, holding `image` (converted into the document's
        colour space unless told otherwise)."""
        layer = self.document.createNode(name, "paintlayer")
        convert = not self._is_srgb8()
        if convert:
            layer.setColorSpace(*SRGB)
        _write(layer, image)
        if convert and in_document_space:
            layer.setColorSpace(self.document.colorModel(), self.document.colorDepth(), self.document.colorProfile())
        return layer

    def _preview(self):
        for node in self.document.rootNode().childNodes():
            if naming.is_preview(node.name()):
                return node
        return None

    def _insertion_point(self):
        """(parent, sibling to go above) for a new layer: above the active layer, below the preview."""
        root = self.document.rootNode()
        active = self.document.activeNode()
        if (active is None or naming.is_preview(active.name())) and self._exists(self._artist_layer):
            active = self._artist_layer
        # Masks live inside layers; a new layer goes above the layer that holds the mask.
        while active is not None and active.type().endswith("mask"):
            active = active.parentNode()
        if active is None or active == root or naming.is_preview(active.name()):
            layers = [n for n in root.childNodes() if not naming.is_preview(n.name())
                      and not n.type().endswith("mask")]
            return root, layers[-1] if layers else None
        return active.parentNode(), active

    def _insert(self, layer) -> None:
        parent, above = self._insertion_point()
        parent.addChildNode(layer, above)
        self.document.waitForDone()

    def _keeping_the_artists_layer(self, add: Callable[[], object]) -> None:
        """`add` a layer of ours (the preview, a hidden layer), which Krita makes the active one some
        time later; the layer active before is given back whenever that happens (_KeepActiveLayer)."""
        active = self.document.activeNode()
        if active is not None and not self._is_ours(active):
            self._artist_layer = active
        add()
        if self._artist_layer is not None:
            if self._keep_active is not None:
                self._keep_active.stop()
            self._keep_active = _KeepActiveLayer(self._restore_active_layer)

    def _is_ours(self, node) -> bool:
        """The preview layer, or the hidden layer added last: layers the artist did not choose to paint on."""
        return naming.is_preview(node.name()) or (self._hidden_layer is not None and node == self._hidden_layer)

    def _restore_active_layer(self) -> bool:
        """Make the artist's layer active again if a layer of ours is; False once that can no longer
        happen (the document or the artist's layer is gone)."""
        if self.document.rootNode() is None or not self._exists(self._artist_layer):
            return False
        active = self.document.activeNode()
        if active is not None and self._is_ours(active):
            self.document.setActiveNode(self._artist_layer)
        return True

    def _annotation(self, kind: str) -> bytes | None:
        """The blob stored in the .kra under `kind`; None when the document has none."""
        if kind not in self.document.annotationTypes():
            return None
        return bytes(self.document.annotation(kind))

    def _annotate(self, kind: str, description: str, blob: bytes) -> None:
        self.document.setAnnotation(kind, description, QByteArray(blob))

    def _node(self, layer_id: str):
        return layer_pixels.find_node(self.document, layer_id)

    def _exists(self, node) -> bool:
        if node is None:
            return False
        stack = list(self.document.rootNode().childNodes())
        while stack:
            candidate = stack.pop()
            if candidate == node:
                return True
            stack.extend(candidate.childNodes())
        return False


class _KeepActiveLayer(QObject):
    """For ACTIVATION_WATCH seconds after a layer of ours is added, gives the artist's layer back
    whenever Krita has made ours the active layer: every ACTIVATION_CHECK_MS, and before any press
    reaches Krita, so a stroke begun in that moment lands on the artist's layer, not on the locked
    preview (where it would paint nothing) or a hidden layer (where it would not be seen)."""

    PRESSES = (QEvent.Type.MouseButtonPress, QEvent.Type.TabletPress, QEvent.Type.TouchBegin)

    def __init__(self, restore: Callable[[], bool]):
        super().__init__()
        self._restore = restore
        self._deadline = time.monotonic() + ACTIVATION_WATCH
        self._timer = QTimer(self)
        self._timer.setInterval(ACTIVATION_CHECK_MS)
        self._timer.timeout.connect(self._check)
        self._timer.start()
        QApplication.instance().installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() in self.PRESSES:
            self._check()
        return False

    def stop(self) -> None:
        self._timer.stop()
        QApplication.instance().removeEventFilter(self)

    def _check(self) -> None:
        if time.monotonic() > self._deadline or not self._restore():
            self.stop()


def _recompose(node) -> None:
    """Have Krita recompose the canvas under `node` after a change it does not notice itself
    (pixels written, visibility toggled from a script). Setting the blending mode is the one call
    of Krita 5.1's API that marks just the layer's area dirty: ~6 ms for a 1024² layer on a 4096²
    canvas, where Document.refreshProjection recomposes everything (~55 ms)."""
    node.setBlendingMode(node.blendingMode())


def _write(layer, image: Image) -> None:
    layer.setPixelData(swap_red_blue(image.data), image.x, image.y, image.width, image.height)


class KritaWorkspace:
    """The open documents of this Krita."""

    def active_document(self) -> KritaDocument | None:
        """The document in the active view; without views (scripts, kritarunner) the newest open one."""
        krita = Krita.instance()
        document = krita.activeDocument()
        if document is None and not krita.windows() and krita.documents():
            document = krita.documents()[-1]
        return KritaDocument(document) if document is not None else None

    def is_open(self, document: KritaDocument) -> bool:
        return any(d == document.document for d in Krita.instance().documents())

    # --- pictures to train on (training.PictureSource) ----------------------------------------

    def layer_pictures(self, side: int) -> list[Picture]:
        document = self.active_document()
        return document.layer_pictures(side) if document is not None else []

    def document_pictures(self, side: int) -> list[Picture]:
        return [KritaDocument(document).picture(side) for document in Krita.instance().documents()]
