"""Krita glue: the Underpaint docker, a view of the controller's state and a remote for its actions.

It stacks the sections of sections/ in a scroll area and keeps them in step with the
controller: the artist's settings go into the controller's `Settings` as they change, and every
section redraws whenever the controller says something changed.
"""

from __future__ import annotations

from krita import DockWidget

from .controller import Controller
from .qt import QLabel, QScrollArea, QTimer, QVBoxLayout, QWidget
from .sections.advanced import AdvancedSection
from .sections.base import Section
from .sections.generation import GenerationSection
from .sections.job import JobSection
from .sections.prompt import PromptSection
from .sections.regions import RegionsSection
from .sections.results import ResultsSection
from .sections.server import ServerSection

DOCKER_ID = "underpaint_docker"
NOT_STARTED = "Underpaint did not start; see Krita's log."
LABEL_MS = 500


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
        self.server = ServerSection(controller)
        self.prompt = PromptSection(controller, self._store_settings)
        self.generation = GenerationSection(controller, self._store_settings, self._choose_fill)
        self.advanced = AdvancedSection(controller, self._store_settings)
        self.regions = RegionsSection(controller)
        self.job = JobSection(controller)
        self.results = ResultsSection(controller)
        self._sections: list[Section] = [self.server, self.prompt, self.generation, self.advanced, self.regions,
                                         self.job, self.results]
        body = QWidget()
        layout = QVBoxLayout(body)
        for section in self._sections:
            layout.addWidget(section, 1 if section is self.results else 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.setWidget(scroll)

        self._load_settings()
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
            section.refresh()
        self._loading = False
        self._store_settings()

    def _load_settings(self) -> None:
        self._loading = True
        for section in self._sections:
            section.load(self.controller.settings)
        self._loading = False
        self._store_settings()

    def _store_settings(self, *_: object) -> None:
        if self._loading:
            return
        for section in self._sections:
            section.store(self.controller.settings)
        self._label_actions()

    def _choose_fill(self, *_: object) -> None:
        if not self._loading:
            self.controller.set_fill(self.generation.fill_mode.currentData())

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
