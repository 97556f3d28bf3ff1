"""The docker's Generate (or Inpaint / Refine) and Cancel buttons, the Live toggle with a line that
says when it follows the artist's strokes, the job's progress with a picture of it forming, and the
last message."""

from __future__ import annotations

from ..controller import Controller
from ..qimage import from_image
from ..qt import QColor, QHBoxLayout, QIcon, QLabel, QPainter, QPixmap, QProgressBar, QPushButton, Qt, QToolButton
from ..session import Job
from .base import Section, wrapping_label

PREVIEW_SIDE = 192
LIVE_ON = "Live: following your strokes"
LIVE_COLOUR = "#d32f2f"  # a recording red: on is unmistakable, also for colour-blind eyes (icon and text change)
# Krita's own style sheet would draw a checked tool button only a shade darker.
LIVE_STYLE = (f"QToolButton:checked {{ background-color: {LIVE_COLOUR}; color: white; font-weight: bold; "
              "border: 1px solid #7f0000; border-radius: 3px; }")
DOT = 12


class JobSection(Section):
    """Generate (or Inpaint / Refine), Cancel and Live; the job's progress; the last message."""

    def __init__(self, controller: Controller):
        super().__init__(controller)
        buttons = QHBoxLayout()
        self.generate = QPushButton("Generate")
        self.generate.setDefault(True)
        self.generate.clicked.connect(lambda: controller.generate())
        self.cancel = QToolButton()
        self.cancel.setText("✕")
        self.cancel.setToolTip("Cancel this image's jobs")
        self.cancel.clicked.connect(lambda: controller.cancel())
        buttons.addWidget(self.generate, 1)
        buttons.addWidget(self.cancel)
        self.column.addLayout(buttons)
        live_row = QHBoxLayout()
        self.live = QToolButton()
        self.live.setCheckable(True)
        self.live.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.live.setStyleSheet(LIVE_STYLE)
        self.live.setToolTip("Repaint the preview whenever you paint (set the strength below 100%)")
        self.live.toggled.connect(lambda on: controller.set_live(on))
        self._icons = {False: _dot(QColor("#808080"), filled=False), True: _dot(QColor("white"), filled=True)}
        self.live_status = wrapping_label(LIVE_ON)
        self.live_status.setStyleSheet(f"color: {LIVE_COLOUR}; font-weight: bold;")
        live_row.addWidget(self.live)
        live_row.addWidget(self.live_status, 1)
        live_row.addStretch()  # keeps the button at the left while the line is hidden
        self.column.addLayout(live_row)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.column.addWidget(self.progress)
        self.step_preview = QLabel()
        self.step_preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.step_preview.setVisible(False)
        self.column.addWidget(self.step_preview)
        self.message = wrapping_label()
        self.column.addWidget(self.message)
        self._show_live(False)

    def refresh(self) -> None:
        session = self.controller.session()
        self.message.setText(self.controller.message)
        self.message.setVisible(bool(self.controller.message))
        self.generate.setEnabled(session is not None)
        jobs = session.jobs if session is not None else []
        self.cancel.setEnabled(bool(jobs))
        self.live.setEnabled(session is not None)
        on = session is not None and session.live is not None
        self.live.blockSignals(True)
        self.live.setChecked(on)
        self.live.blockSignals(False)
        self._show_live(on)
        self._show_progress(jobs)

    def _show_live(self, on: bool) -> None:
        self.live.setText("Live on" if on else "Live")
        self.live.setIcon(self._icons[on])
        self.live_status.setVisible(on)

    def _show_progress(self, jobs: list[Job]) -> None:
        self.progress.setVisible(bool(jobs))
        if not jobs:
            self.step_preview.setVisible(False)
            return
        job = jobs[0]
        waiting = f" (+{len(jobs) - 1} waiting)" if len(jobs) > 1 else ""
        tile = f", tile {job.tile + 1} of {job.tiles}" if job.tiles else ""
        if job.state == "running" and job.total:
            self.progress.setRange(0, job.total)
            self.progress.setValue(job.step)
            self.progress.setFormat(f"Step {job.step} of {job.total}{tile}{waiting}")
        elif job.state == "running" and job.tiles:  # upscaling or decoding: tiles without steps
            self.progress.setRange(0, job.tiles)
            self.progress.setValue(job.tile)
            self.progress.setFormat(f"Tile {job.tile + 1} of {job.tiles}{waiting}")
        else:
            self.progress.setRange(0, 0)  # busy indicator
            if job.makes_control:  # made at once, never queued
                state = "Making a control image"
            else:
                where = f", {job.position} ahead" if job.state == "queued" and job.position else ""
                state = f"{'Queued' if job.state == 'queued' else 'Waiting'}{where}"
            self.progress.setFormat(state + waiting)
        if job.preview is not None:
            pixmap = QPixmap.fromImage(from_image(job.preview))
            self.step_preview.setPixmap(pixmap.scaled(PREVIEW_SIDE, PREVIEW_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation))
            self.step_preview.setVisible(True)


def _dot(colour: QColor, filled: bool) -> QIcon:
    """A round dot: hollow grey for off, filled for on (the recording sign)."""
    pixmap = QPixmap(DOT, DOT)
    pixmap.fill(QColor(0, 0, 0, 0))
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(colour)
    if filled:
        painter.setBrush(colour)
    painter.drawEllipse(1, 1, DOT - 3, DOT - 3)
    painter.end()
    return QIcon(pixmap)
