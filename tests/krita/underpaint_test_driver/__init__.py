"""A test-only Krita plugin: once Krita shows a document, run the scenario the job names, then quit.

GUI Krita has no command-line option to run a script, so the GUI tests and tools/screenshot.sh
install this next to the real plugin and start Krita with a picture to open. The job
($UNDERPAINT_KRITA_JOB) names the scenario function of tests/krita/scenarios.py and whether
Krita should quit afterwards (after its last step, for a scenario in steps). Quitting before
that first document's view exists crashes or hangs Krita 5.1, hence the wait for it.
"""

import importlib
import json
import os

from krita import Extension, Krita
from PyQt5.QtCore import QTimer


class Driver(Extension):
    def setup(self):
        self.timer = QTimer(self)
        self.timer.setInterval(250)
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    def createActions(self, window):
        pass

    def tick(self):
        window = Krita.instance().activeWindow()
        if window is None or not window.views():
            return
        self.timer.stop()
        with open(os.environ["UNDERPAINT_KRITA_JOB"]) as f:
            job = json.load(f)
        self.steps = getattr(importlib.import_module("scenarios"), job["scenario"])()
        if job.get("quit", True):
            if self.steps is not None:  # a scenario in steps: quit when its last step is done
                self.steps.then(self.quit)
            else:
                self.quit()

    @staticmethod
    def quit():
        for document in Krita.instance().documents():
            document.setModified(False)
        Krita.instance().action("file_quit").trigger()


Krita.instance().addExtension(Driver(Krita.instance()))
