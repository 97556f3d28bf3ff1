"""What the docker's per-layer sections share (regions, control layers, reference pictures): a short
list of layers with what each is for (and a thumbnail where the layer's picture matters), a button that
adds the active layer and one that removes the selected entry."""

from __future__ import annotations

import zlib
from collections.abc import Callable

from shared.messages import Image

from ..controller import Controller
from ..qimage import from_image
from ..qt import QHBoxLayout, QIcon, QListWidget, QListWidgetItem, QPixmap, QSizePolicy, QToolButton
from .base import USER_ROLE, FoldingSection, wrapping_label

LIST_HEIGHT = 80
THUMBNAIL_ROLE = USER_ROLE + 1  # a checksum of the thumbnail a row shows


class LayerListSection(FoldingSection):
    """`self.layer_list` shows (text, layer id) rows; `self.add` and `self.remove` call `add()` and
    `remove(layer id)` of the selected row; `self.buttons` is their row, for a section to add to."""

    def __init__(self, controller: Controller, name: str, title: str, explanation: str, add_tip: str,
                 remove_tip: str, add: Callable[[], None], remove: Callable[[str], None]):
        super().__init__(controller, name, title, open_by_default=False)
        self.rows.addWidget(wrapping_label(explanation))
        self.layer_list = QListWidget()
        self.layer_list.setMaximumHeight(LIST_HEIGHT)
        self.rows.addWidget(self.layer_list)
        self.buttons = QHBoxLayout()
        # Tool buttons: they need less room around their text than push buttons in the narrow column.
        self.add = QToolButton()
        self.add.setText("Add layer")
        self.add.setToolTip(add_tip)
        self.add.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.add.clicked.connect(lambda: add())
        self.remove = QToolButton()
        self.remove.setText("Remove")
        self.remove.setToolTip(remove_tip)
        self.remove.clicked.connect(lambda: self._remove_selected(remove))
        self.buttons.addWidget(self.add, 1)
        self.buttons.addWidget(self.remove)
        self.rows.addLayout(self.buttons)

    def show_layers(self, rows: list[tuple[str, str]], thumbnails: list[Image | None] | None = None) -> None:
        """Show (text, layer id) rows, each with its thumbnail where `thumbnails` gives one, the selected
        layer kept selected (rebuilt only when they differ)."""
        thumbnails = thumbnails or [None] * len(rows)
        checksums = [zlib.crc32(t.data) if t is not None else None for t in thumbnails]
        shown = [(self.layer_list.item(i).text(), self.layer_list.item(i).data(USER_ROLE),
                  self.layer_list.item(i).data(THUMBNAIL_ROLE)) for i in range(self.layer_list.count())]
        if shown == [(text, layer_id, checksum) for (text, layer_id), checksum in zip(rows, checksums, strict=True)]:
            return
        selected = self.selected()
        self.layer_list.clear()
        for (text, layer_id), thumbnail, checksum in zip(rows, thumbnails, checksums, strict=True):
            item = QListWidgetItem(text)
            item.setData(USER_ROLE, layer_id)
            item.setData(THUMBNAIL_ROLE, checksum)
            if thumbnail is not None:
                item.setIcon(QIcon(QPixmap.fromImage(from_image(thumbnail))))
            self.layer_list.addItem(item)
            if layer_id == selected:
                self.layer_list.setCurrentItem(item)

    def _remove_selected(self, remove: Callable[[str], None]) -> None:
        layer_id = self.selected()
        if layer_id is not None:
            remove(layer_id)

    def selected(self) -> str | None:
        """The layer id of the selected row."""
        item = self.layer_list.currentItem()
        return item.data(USER_ROLE) if item is not None else None
