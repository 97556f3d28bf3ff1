"""The docker's Generate (or Inpaint / Refine), Cancel and Live buttons, the job's progress with a
picture of it forming, and the last message."""

from __future__ import annotations

from ..controller import Controller
from ..qimage import from_image
from ..qt import QHBoxLayout, QLabel, QPixmap, QProgressBar, QPushButton, Qt
from ..session import Job
from .base import Section

PREVIEW_SIDE = 192

class JobSection(Section):
    """Generate (or Inpaint / Refine), Cancel and Live; the job's progress; the last message."""

    def __init__(self, controller: Controller):
        super().__init__(controller)
        buttons = QHBoxLayout()
        self.generate = QPushButton("Generate")
        self.generate.setDefault(True)
        self.generate.clicked.connect(lambda: controller.generate())
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(lambda: controller.cancel())
        self.live = QPushButton("Live")
        self.live.setCheckable(True)
        self.live.setToolTip("Repaint the preview whenever the canvas changes (set the strength below 100%)")
        self.live.toggled.connect(lambda on: controller.set_live(on))
        buttons.addWidget(self.generate, 2)
        buttons.addWidget(self.cancel, 1)
        buttons.addWidget(self.live, 1)
        self.column.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.column.addWidget(self.progress)
        self.step_preview = QLabel()
        self.step_preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.step_preview.setVisible(False)
        self.column.addWidget(self.step_preview)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.column.addWidget(self.message)

    def refresh(self) -> None:
        session = self.controller.session()
        self.message.setText(self.controller.message)
        self.generate.setEnabled(session is not None)
        jobs = session.jobs if session is not None else []
        self.cancel.setEnabled(bool(jobs))
        self.live.setEnabled(session is not None)
        self.live.blockSignals(True)
        self.live.setChecked(session is not None and session.live is not None)
        self.live.blockSignals(False)
        self._show_progress(jobs)

    def _show_progress(self, jobs: list[Job]) -> None:
        self.progress.setVisible(bool(jobs))
        if not jobs:
            self.step_preview.setVisible(False)
            return
        job = jobs[0]
        waiting = f" (+{len(jobs) - 1} waiting)" if len(jobs) > 1 else ""
        if job.state == "running" and job.total:
            self.progress.setRange(0, job.total)
            self.progress.setValue(job.step)
            self.progress.setFormat(f"Step {job.step} of {job.total}{waiting}")
        else:
            self.progress.setRange(0, 0)  # busy indicator
            where = f", {job.position} ahead" if job.state == "queued" and job.position else ""
            self.progress.setFormat(f"{'Queued' if job.state == 'queued' else 'Waiting'}{where}{waiting}")
        if job.preview is not None:
            pixmap = QPixmap.fromImage(from_image(job.preview))
            self.step_preview.setPixmap(pixmap.scaled(PREVIEW_SIDE, PREVIEW_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation))
            self.step_preview.setVisible(True)
