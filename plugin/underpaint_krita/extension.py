"""Krita glue: registers the extension (which owns the controller) and the docker."""

from __future__ import annotations

from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication

from shared import DEFAULT_PORT

from .connection import Connection
from .controller import Controller
from .docker import DOCKER_ID, UnderpaintDocker
from .document import KritaWorkspace

SETTINGS_GROUP = "underpaint"
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
        connection = Connection(preferences.read("server_url") or DEFAULT_URL, token=preferences.read("token"))
        self.controller = Controller(connection, KritaWorkspace(), preferences=preferences)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.controller.poll)
        self._timer.start(POLL_MS)
        connection.start()
        QApplication.instance().aboutToQuit.connect(connection.stop)

    def createActions(self, window) -> None:
        pass

    def set_server(self, url: str, token: str | None = None) -> None:
        """Connect to `url` now and remember it for the next start."""
        self.controller.preferences.write("server_url", url)
        self.controller.preferences.write("token", token or "")
        self.controller.set_server(url, token)


def find_extension() -> UnderpaintExtension | None:
    return next((e for e in Krita.instance().extensions() if isinstance(e, UnderpaintExtension)), None)


def register(krita) -> None:
    krita.addExtension(UnderpaintExtension(krita))
    krita.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, UnderpaintDocker))
