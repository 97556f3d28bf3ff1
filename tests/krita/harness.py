"""Runs inside Krita (kritarunner or the GUI test driver): load the plugin, pump events, report.

A scenario reads its job (JSON named by $UNDERPAINT_KRITA_JOB: output file, plugin folder,
server address, ...) and writes its findings as JSON for the pytest side to assert on. It never
asserts itself: an exception is reported as `error` with its traceback.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Generator

from krita import Krita
from PyQt5.QtCore import QCoreApplication, QTimer


def job() -> dict:
    with open(os.environ["UNDERPAINT_KRITA_JOB"]) as f:
        return json.load(f)


def report(scenario: Callable[[dict, dict], object]) -> Callable[..., Steps | None]:
    """Wrap a scenario(job, findings) so it always writes its findings file.

    A scenario that is a generator runs in steps (see Steps) and the wrapper returns its Steps;
    the findings are written when the last step is done."""

    def run(*_: object) -> Steps | None:
        settings, findings = job(), {}

        def write() -> None:
            with open(settings["output"], "w") as f:
                json.dump(findings, f, indent=1)

        try:
            steps = scenario(settings, findings)
            if inspect.isgenerator(steps):
                return Steps(steps, findings, write)
        except Exception:
            findings["error"] = traceback.format_exc()
        write()
        return None

    run.__name__ = scenario.__name__
    return run


class Steps:
    """A generator scenario driven by a timer, so that between its steps Krita's own top-level
    event loop runs, as it does while an artist works. pump() runs a nested loop instead, in which
    Krita holds back some of its own work (a layer added by a script becomes the active one only
    at the top level) and input events reach it unlike an artist's. A step yields seconds to wait
    or a condition to wait for (at most CONDITION_TIMEOUT seconds; the scenario checks it again)."""

    CONDITION_TIMEOUT = 120.0

    def __init__(self, steps: Generator[float | Callable[[], bool], None, None], findings: dict,
                 write: Callable[[], None]):
        self._steps, self._findings, self._write = steps, findings, write
        self._done: list[Callable[[], None]] = []
        self._finished = False
        self._timer = QTimer()
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._tick)
        self._wait: Callable[[], bool] = lambda: True
        self._timer.start()

    def then(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the findings are written."""
        if self._finished:
            callback()
        else:
            self._done.append(callback)

    def _tick(self) -> None:
        try:
            if not self._wait():
                return
            step = next(self._steps)
        except StopIteration:
            self._finish()
            return
        except Exception:
            self._findings["error"] = traceback.format_exc()
            self._finish()
            return
        deadline = time.monotonic() + (step if isinstance(step, (int, float)) else self.CONDITION_TIMEOUT)
        condition = step if callable(step) else (lambda: False)
        self._wait = lambda: time.monotonic() >= deadline or condition()

    def _finish(self) -> None:
        self._timer.stop()
        self._write()
        self._finished = True
        for callback in self._done:
            callback()


def extension(settings: dict):
    """The plugin's extension, set up and connected to the job's server.

    GUI Krita has loaded and set up the installed plugin already; kritarunner loads no plugins,
    so it is imported from the installed folder and set up the way Krita would.
    """
    if "underpaint_krita" not in sys.modules:
        sys.path.insert(0, settings["pykrita"])
        import underpaint_krita  # noqa: F401  (registers the extension)
    from underpaint_krita.extension import UnderpaintExtension

    found = next(e for e in Krita.instance().extensions() if isinstance(e, UnderpaintExtension))
    found.setup()
    if settings.get("server") and found.controller.connection.url != settings["server"]:
        found.controller.set_server(settings["server"])
    return found


def pump(condition: Callable[[], bool], timeout: float) -> bool:
    """Run Qt's event loop (the plugin's poll timer included) until `condition()` or the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def new_document(width: int, height: int, depth: str = "U8", name: str = "test"):
    krita = Krita.instance()
    profile = "sRGB-elle-V2-srgbtrc.icc" if depth == "U8" else "sRGB-elle-V2-g10.icc"
    document = krita.createDocument(width, height, name, "RGBA", depth, profile, 72.0)
    if krita.activeWindow() is not None:
        krita.activeWindow().addView(document)
    document.waitForDone()
    return document


def fingerprint(node, document) -> str:
    """A hash of everything a layer holds, to prove it was not touched."""
    data = bytes(node.pixelData(0, 0, document.width(), document.height()))
    return hashlib.sha256(data + node.name().encode() + bytes([node.visible(), node.locked()])).hexdigest()


def layer_names(document) -> list[str]:
    return [node.name() for node in document.rootNode().childNodes()]
