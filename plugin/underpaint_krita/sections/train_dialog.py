"""The Train dialog: the artist's pictures (visible layers, open documents or a folder), a caption for
each, the trigger word, what is taught (style, character, small concept), the steps; then the run's
progress, its loss curve and its newest sample, until the new LoRA or embedding is in the picker.

It stays open beside Krita (not modal): the run goes on in the server, and the dialog shows the
controller's `training` whenever the controller says something changed (training.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..controller import Controller
from ..errors import UserError
from ..qimage import as_rgba8, from_image, shrunk
from ..qt import (
    QColor,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QImage,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPainter,
    QPen,
    QPixmap,
    QPointF,
    QPolygonF,
    QProgressBar,
    QPushButton,
    QRegularExpression,
    QRegularExpressionValidator,
    QSize,
    QSpinBox,
    Qt,
    QVBoxLayout,
    QWidget,
)
from ..training import (
    SUBJECTS,
    Picture,
    PictureSource,
    TrainingSettings,
    caption_file,
    curve,
    picture_files,
    training_side,
)
from .base import Choice, fill_combo, wrapping_label

THUMBNAIL = 64
SERVERS_CHOICE = "Server's choice"
SAMPLE = 160
CAPTION_BYTES = 4096  # of a caption file beside a picture


class LossCurve(QWidget):
    """The loss of each step as a line, steps across, the lowest loss seen at the bottom."""

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumSize(220, 90)
        self.points: list[tuple[int, float]] = []
        self.total = 0

    def show_losses(self, points: list[tuple[int, float]], total: int) -> None:
        if (points, total) != (self.points, self.total):
            self.points, self.total = list(points), total
            self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        box = self.rect().adjusted(1, 1, -2, -2)
        painter.setPen(QPen(self.palette().mid().color()))
        painter.drawRect(box)
        line = curve(self.points, box.width() - 4, box.height() - 4, self.total)
        if line:
            painter.setPen(QPen(QColor(70, 150, 230), 2))
            painter.drawPolyline(QPolygonF([QPointF(box.x() + 2 + x, box.y() + 2 + y) for x, y in line]))
        painter.end()


class _PictureRow(QWidget):
    """One picture in the list: its thumbnail, where it came from, its caption."""

    def __init__(self, picture: Picture):
        super().__init__()
        self.picture = picture
        row = QHBoxLayout(self)
        row.setContentsMargins(2, 2, 2, 2)
        thumbnail = QLabel()
        thumbnail.setFixedSize(THUMBNAIL, THUMBNAIL)
        thumbnail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        thumbnail.setPixmap(_pixmap(from_image(picture.image), THUMBNAIL))
        column = QVBoxLayout()
        self.label = QLabel(f"{picture.label} · {picture.image.width}×{picture.image.height}")
        self.caption = QLineEdit(picture.caption)
        self.caption.setPlaceholderText("Caption: what is in the picture besides what you teach")
        self.caption.setToolTip("Describe what should NOT become part of the trigger word (the background, "
                                "the pose...). Empty: the trigger word alone.")
        column.addWidget(self.label)
        column.addWidget(self.caption)
        row.addWidget(thumbnail)
        row.addLayout(column, 1)


class TrainDialog(QDialog):
    def __init__(self, parent: QWidget | None, controller: Controller, source: PictureSource):
        super().__init__(parent)
        self.setWindowTitle("Train a LoRA or embedding")
        self.controller, self.source = controller, source
        column = QVBoxLayout(self)

        self.pictures = QListWidget()
        self.pictures.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.pictures.setMinimumSize(420, 220)
        column.addWidget(QLabel("Pictures to learn from (5 to 50 work best)"))
        column.addWidget(self.pictures, 1)
        adding = QHBoxLayout()
        self.add_layers = QPushButton("Add visible layers")
        self.add_layers.setToolTip("Each visible layer of the active image, as a picture of its own")
        self.add_layers.clicked.connect(lambda: self._add(self.source.layer_pictures(self.side())))
        self.add_documents = QPushButton("Add open images")
        self.add_documents.setToolTip("Each open image as it looks")
        self.add_documents.clicked.connect(lambda: self._add(self.source.document_pictures(self.side())))
        self.add_folder = QPushButton("Add folder…")
        self.add_folder.setToolTip("The pictures in a folder; a .txt file beside a picture is its caption")
        self.add_folder.clicked.connect(self._choose_folder)
        self.remove = QPushButton("Remove")
        self.remove.clicked.connect(self._remove_selected)
        for button in (self.add_layers, self.add_documents, self.add_folder, self.remove):
            adding.addWidget(button)
        column.addLayout(adding)

        form = QFormLayout()
        self.model = QComboBox()
        self.model.setToolTip("The model the LoRA or embedding is made for, and used with")
        self.subject = QComboBox()
        fill_combo(self.subject, [Choice(label, name, tooltip) for name, (label, _, tooltip) in SUBJECTS.items()],
                   TrainingSettings().subject)
        self.trigger = QLineEdit()
        self.trigger.setValidator(QRegularExpressionValidator(QRegularExpression(r"\S*"), self.trigger))
        self.trigger.setPlaceholderText("one word, e.g. mycat")
        self.trigger.setToolTip("The word that calls up what was learnt in a prompt: pick one the model does not "
                                "know yet")
        self.name = QLineEdit()
        self.name.setPlaceholderText("the trigger word")
        self.name.setToolTip("How the LoRA menu names it")
        self.steps = QSpinBox()
        self.steps.setRange(0, 100_000)
        self.steps.setSpecialValueText(SERVERS_CHOICE)  # shown for 0
        self.steps.setSingleStep(50)
        self.steps.setToolTip("More steps learn more, and take longer; too many copy your pictures. "
                              f"{SERVERS_CHOICE}: what suits the model and what you teach")
        for label, widget in (("Model", self.model), ("Teach", self.subject), ("Trigger word", self.trigger),
                              ("Name", self.name), ("Steps", self.steps)):
            form.addRow(label, widget)
        column.addLayout(form)

        self.progress = QProgressBar()
        self.status = wrapping_label()
        self.curve = LossCurve()
        self.sample = QLabel()
        self.sample.setFixedSize(SAMPLE, SAMPLE)
        self.sample.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.sample.setToolTip("The newest sample: a picture made with the trigger word as the training goes")
        shown = QHBoxLayout()
        shown.addWidget(self.curve, 1)
        shown.addWidget(self.sample)
        column.addWidget(self.progress)
        column.addWidget(self.status)
        column.addLayout(shown)
        buttons = QHBoxLayout()
        self.start = QPushButton("Start training")
        self.start.clicked.connect(self._start)
        self.cancel = QPushButton("Cancel training")
        self.cancel.clicked.connect(controller.cancel_training)
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("The training goes on; the Train button opens this again")
        self.close_button.clicked.connect(self.hide)
        buttons.addStretch(1)
        for button in (self.start, self.cancel, self.close_button):
            buttons.addWidget(button)
        column.addLayout(buttons)

        self._sample_shown = None
        controller.subscribe(self.refresh)
        self.destroyed.connect(lambda *_: controller.unsubscribe(self.refresh))
        self.refresh()

    # --- what the dialog says ---------------------------------------------------------------------

    def side(self) -> int:
        """The training area's side for the chosen model: pictures are shrunk to it as they are added."""
        chosen = self.model.currentData()
        return training_side(next((m for m in self.controller.server.listed() if m.name == chosen), None))

    def rows(self) -> list[_PictureRow]:
        return [self.pictures.itemWidget(self.pictures.item(i)) for i in range(self.pictures.count())]

    def settings(self) -> TrainingSettings:
        return TrainingSettings(model=self.model.currentData() or "", subject=self.subject.currentData(),
                                trigger=self.trigger.text(), name=self.name.text(), steps=self.steps.value() or None)

    def chosen_pictures(self) -> list[Picture]:
        """The listed pictures with the captions as typed."""
        return [Picture(row.picture.label, row.picture.image, row.caption.text()) for row in self.rows()]

    # --- showing the controller's state ----------------------------------------------------------

    def refresh(self) -> None:
        server = self.controller.server
        current = self.model.currentData() or self.controller.settings.model
        fill_combo(self.model, [Choice(name, name) for name in server.models], current)
        run = self.controller.training
        running = run is not None and not run.finished
        self.start.setEnabled(not running)
        self.cancel.setEnabled(running)
        for widget in (self.add_layers, self.add_documents, self.add_folder, self.remove, self.model,
                       self.subject, self.trigger, self.name, self.steps):
            widget.setEnabled(not running)
        self.progress.setVisible(run is not None)
        self.curve.setVisible(run is not None)
        self.sample.setVisible(run is not None and run.sample is not None)
        if run is None:
            return
        self.progress.setRange(0, max(1, run.total or run.request.steps or 1))
        self.progress.setValue(run.step)
        if self.status.text() != run.message:
            self.status.setText(run.message)
        self.curve.show_losses(run.losses, run.total or run.request.steps or 0)
        if run.sample is not None and run.sample is not self._sample_shown:
            self._sample_shown = run.sample
            self.sample.setPixmap(_pixmap(from_image(as_rgba8(run.sample)), SAMPLE))  # the server sends PNG

    # --- the artist's actions --------------------------------------------------------------------

    def _add(self, pictures: list[Picture]) -> None:
        for picture in pictures:
            item = QListWidgetItem()
            row = _PictureRow(picture)
            item.setSizeHint(row.sizeHint().expandedTo(QSize(0, THUMBNAIL + 8)))
            self.pictures.addItem(item)
            self.pictures.setItemWidget(item, row)
        self.status.setText(f"{self.pictures.count()} pictures." if pictures else "No pictures found there.")

    def add_folder_pictures(self, folder: str) -> None:
        """The pictures of `folder` (not its subfolders), each with the caption of its .txt file."""
        found = []
        for name in picture_files(os.listdir(folder)):
            path = Path(folder, name)
            image = QImage(str(path))
            if image.isNull():
                continue
            caption = Path(caption_file(str(path)))
            text = caption.read_bytes()[:CAPTION_BYTES].decode("utf-8", "replace").strip() if caption.is_file() else ""
            found.append(Picture(name, shrunk(image, self.side()), " ".join(text.split())))
        self._add(found)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Pictures to learn from")
        if folder:
            self.add_folder_pictures(folder)

    def _remove_selected(self) -> None:
        for item in self.pictures.selectedItems():
            self.pictures.takeItem(self.pictures.row(item))

    def _start(self) -> None:
        try:
            self.controller.train(self.settings(), self.chosen_pictures())
        except UserError as exc:
            self.status.setText(str(exc))


def _pixmap(image: QImage, side: int) -> QPixmap:
    return QPixmap.fromImage(image.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.SmoothTransformation))
