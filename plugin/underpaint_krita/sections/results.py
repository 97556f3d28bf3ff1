"""The docker's results: the document's history as thumbnails, Apply and Discard."""

from __future__ import annotations

from ..controller import Controller
from ..history import Entry
from ..qimage import from_image
from ..qt import QHBoxLayout, QIcon, QListView, QListWidget, QListWidgetItem, QPixmap, QPushButton, QSize, Qt
from ..session import DocumentSession
from .base import USER_ROLE, FoldingSection

THUMBNAIL = 96


class ResultsSection(FoldingSection):
    """The document's results, newest first: click to preview, double-click or Apply to add a layer."""

    def __init__(self, controller: Controller):
        super().__init__(controller, "results", "Results", open_by_default=True)
        self._icons: dict[str, QIcon] = {}
        self.thumbnails = QListWidget()
        self.thumbnails.setViewMode(QListView.ViewMode.IconMode)
        self.thumbnails.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.thumbnails.setResizeMode(QListView.ResizeMode.Adjust)
        self.thumbnails.setMovement(QListView.Movement.Static)
        self.thumbnails.setMinimumHeight(THUMBNAIL + 24)
        self.thumbnails.itemClicked.connect(lambda item: controller.show(item.data(USER_ROLE)))
        self.thumbnails.itemDoubleClicked.connect(lambda item: controller.apply(item.data(USER_ROLE)))
        self.rows.addWidget(self.thumbnails, 1)
        buttons = QHBoxLayout()
        self.apply = QPushButton("Apply")
        self.apply.setToolTip("Copy the result shown into a new layer above the active layer")
        self.apply.clicked.connect(lambda: controller.apply())
        self.discard = QPushButton("Discard")
        self.discard.setToolTip("Remove the selected result from the history")
        self.discard.clicked.connect(self._discard)
        buttons.addWidget(self.apply)
        buttons.addWidget(self.discard)
        self.rows.addLayout(buttons)

    def refresh(self) -> None:
        self._show(self.controller.session())

    def _show(self, session: DocumentSession | None) -> None:
        entries = session.history.newest_first() if session is not None else []
        ids = [entry.id for entry in entries]
        shown = [self.thumbnails.item(i).data(USER_ROLE) for i in range(self.thumbnails.count())]
        if ids != shown:
            self.thumbnails.clear()
            for entry in entries:
                item = QListWidgetItem(self._icon(entry), str(entry.seed))
                item.setData(USER_ROLE, entry.id)
                item.setToolTip(f"{entry.prompt or '(no prompt)'}\nseed {entry.seed} · {entry.model} · {entry.mode}")
                self.thumbnails.addItem(item)
            self._icons = {k: v for k, v in self._icons.items() if k in ids}
        current = session.shown if session is not None else None
        for i in range(self.thumbnails.count()):
            item = self.thumbnails.item(i)
            if item.data(USER_ROLE) == current:
                self.thumbnails.setCurrentItem(item)
            item.setSelected(item.data(USER_ROLE) == current)
        self.apply.setEnabled(current is not None)
        self.discard.setEnabled(bool(entries))

    def _icon(self, entry: Entry) -> QIcon:
        if entry.id not in self._icons:
            image = from_image(entry.image()).scaled(THUMBNAIL, THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio,
                                                     Qt.TransformationMode.SmoothTransformation)
            self._icons[entry.id] = QIcon(QPixmap.fromImage(image))
        return self._icons[entry.id]

    def _discard(self) -> None:
        item = self.thumbnails.currentItem()
        if item is not None:
            self.controller.discard(item.data(USER_ROLE))
