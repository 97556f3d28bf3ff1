"""Krita glue: the extension owns the controller and its poll timer, and makes the dockers.

Krita builds a docker per window through the factory registered here, which hands each docker
the extension's controller: the docker needs nothing from this module, so no import runs back.
"""

from __future__ import annotations

from pathlib import Path

from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from shared import DEFAULT_PORT

from .connection import Connection
from .controller import Controller
from .docker import DOCKER_ID, UnderpaintDocker
from .document import KritaWorkspace
from .preferences import SERVER_URL, TOKEN
from .qt import QApplication, QTimer
from .styles import StyleLibrary

SETTINGS_GROUP = "underpaint"
STYLES_FOLDER = ("underpaint", "styles")  # in Krita's resource folder
DEFAULT_URL = f"ws://127.0.0.1:{DEFAULT_PORT}"
POLL_MS = 50


class KritaPreferences:
    """The controller's preferences as entries of Krita's settings (kritarc, group `underpaint`)."""

    def read(self, key: str) -> str | None:
        return Krita.instance().readSetting(SETTINGS_GROUP, key, "") or None

    def write(self, key: str, value: str) -> None:
        Krita.instance().writeSetting(SETTINGS_GROUP, key, value)


class UnderpaintExtension(Extension):
    """Lives as long as Krita; the controller works with or without a docker (e.g. in kritarunner)."""

    def __init__(self, parent):
        super().__init__(parent)
        self.controller: Controller | None = None
        self._timer: QTimer | None = None

    def setup(self) -> None:
        if self.controller is not None:
            return
        preferences = KritaPreferences()
        connection = Connection(preferences.read(SERVER_URL) or DEFAULT_URL, token=preferences.read(TOKEN))
        styles = StyleLibrary(Path(Krita.instance().getAppDataLocation(), *STYLES_FOLDER))
        self.controller = Controller(connection, KritaWorkspace(), preferences=preferences, styles=styles)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.controller.poll)
        self._timer.start(POLL_MS)
        connection.start()
        QApplication.instance().aboutToQuit.connect(connection.stop)

    def createActions(self, window) -> None:
        pass

    def create_docker(self) -> UnderpaintDocker:
        """A docker for a new window; Krita sets extensions up before it opens windows."""
        return UnderpaintDocker(self.controller)


def register(krita) -> None:
    extension = UnderpaintExtension(krita)
    krita.addExtension(extension)
    right = DockWidgetFactoryBase.DockPosition.DockRight
    krita.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, right, extension.create_docker))
