"""Runs inside Krita (kritarunner or the GUI test driver): load the plugin, pump events, report.

A scenario reads its job (JSON named by $UNDERPAINT_KRITA_JOB: output file, plugin folder,
server address, ...) and writes its findings as JSON for the pytest side to assert on. It never
asserts itself: an exception is reported as `error` with its traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable

from krita import Krita
from PyQt5.QtCore import QCoreApplication


def job() -> dict:
    with open(os.environ["UNDERPAINT_KRITA_JOB"]) as f:
        return json.load(f)


def report(scenario: Callable[[dict, dict], None]) -> Callable[..., None]:
    """Wrap a scenario(job, findings) so it always writes its findings file."""

    def run(*_: object) -> None:
        settings, findings = job(), {}
        try:
            scenario(settings, findings)
        except Exception:
            findings["error"] = traceback.format_exc()
        with open(settings["output"], "w") as f:
            json.dump(findings, f, indent=1)

    run.__name__ = scenario.__name__
    return run


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
