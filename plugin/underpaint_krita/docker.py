"""Krita glue: the Underpaint docker, a view of the controller's state and a remote for its actions.

It stacks the sections of sections/ in a scroll area that scrolls only up and down (Krita docks it
in its narrow right column; sections/base.py keeps every row narrow enough) and keeps them in step
with the controller: when the artist changes a control, what all the controls say goes to the
controller (which tells the artist's choices from the model's recommendations, choices.py); when
the controller says something changed, every section shows the settings and the state again.
"""

from __future__ import annotations

from dataclasses import replace

from krita import DockWidget

from .controller import Controller
from .qt import QLabel, QScrollArea, Qt, QTimer, QVBoxLayout, QWidget
from .sections.advanced import AdvancedSection
from .sections.base import MIN_WIDTH, SPACING, Section
from .sections.controls import ControlsSection
from .sections.generation import GenerationSection
from .sections.job import JobSection
from .sections.prompt import PromptSection
from .sections.references import ReferencesSection
from .sections.regions import RegionsSection
from .sections.results import ResultsSection
from .sections.server import ServerSection
from .sections.style import StyleSection
from .sections.upscale import UpscaleSection

DOCKER_ID = "underpaint_docker"
NOT_STARTED = "Underpaint did not start; see Krita's log."
LABEL_MS = 500
MARGIN = 4


class UnderpaintDocker(DockWidget):
    def __init__(self, controller: Controller | None):
        super().__init__()
        self.setWindowTitle("Underpaint")
        self.setObjectName(DOCKER_ID)
        self.controller = controller
        if controller is None:
            self.setWidget(QLabel(NOT_STARTED))
            return
        self._loading = True  # widgets set up or filled by the docker are not the artist's choice
        self.styles = StyleSection(controller)
        self.server = ServerSection(controller)
        self.prompt = PromptSection(controller, self._store_settings)
        self.generation = GenerationSection(controller, self._store_settings, self._choose_fill, self._choose_detail)
        self.job = JobSection(controller)
        self.advanced = AdvancedSection(controller, self._store_settings)
        self.regions = RegionsSection(controller)
        self.controls = ControlsSection(controller)
        self.references = ReferencesSection(controller)
        self.results = ResultsSection(controller)
        self.upscale = UpscaleSection(controller)
        self._sections: list[Section] = [self.styles, self.server, self.prompt, self.generation, self.job,
                                         self.advanced, self.regions, self.controls, self.references, self.upscale,
                                         self.results]
        body = QWidget()
        body.setMinimumWidth(MIN_WIDTH)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(MARGIN, MARGIN, MARGIN, MARGIN)
        layout.setSpacing(SPACING * 2)
        for section in self._sections:
            layout.addWidget(section, 1 if section is self.results else 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        self.setWidget(scroll)

        controller.subscribe(self.refresh)
        self.destroyed.connect(lambda *_: controller.unsubscribe(self.refresh))
        # The selection changes without telling anyone; the button names what it will do.
        self._label_timer = QTimer(self)
        self._label_timer.timeout.connect(self._label_actions)
        self._label_timer.start(LABEL_MS)
        self.refresh()

    def canvasChanged(self, canvas) -> None:  # Krita calls this when the active document changes
        if self.controller is not None:
            self.refresh()

    def refresh(self) -> None:
        self._loading = True
        for section in self._sections:
            section.load(self.controller.settings)
            section.refresh()
        self._loading = False
        self._store_settings()

    def _store_settings(self, *_: object) -> None:
        if self._loading:
            return
        new = replace(self.controller.settings)
        for section in self._sections:
            section.store(new)
        self.controller.edit_settings(new)
        self._label_actions()

    def _choose_fill(self, *_: object) -> None:
        if not self._loading:
            self.controller.set_fill(self.generation.fill_mode.currentData())

    def _choose_detail(self, *_: object) -> None:
        if not self._loading:
            self.controller.set_detail(self.generation.detail.currentData())

    def _label_actions(self) -> None:
        percent = self.generation.strength.value()
        session = self.controller.session()
        selection = session is not None and session.document.selection_bounds() is not None
        if percent >= 100:
            action = "Inpaint selection" if selection else "Generate"
        else:
            action = "Refine selection" if selection else "Refine"
        self.generation.strength_label.setText(f"Strength {percent}%")
        self.job.generate.setText(action)
