"""Runs every check of checks.py in this one process, playing the Krita that
$UNDERPAINT_FAKE_KRITA_QT names (5: PyQt5, 6: PyQt6), and writes each outcome as JSON.

Usage: QT_QPA_PLATFORM=offscreen UNDERPAINT_FAKE_KRITA_QT=6 python tests/qt/run.py OUTCOMES.json

This folder goes first on sys.path, so `krita` and `pykrita` are the stand-ins. The plugin's
package is imported before any check, as Krita imports it at startup.
"""

import json
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1]), str(HERE.parents[1] / "plugin"),
                str(HERE.parent / "krita")]  # the docker's layout check, shared with the GUI Krita test

import checks  # noqa: E402
import krita  # noqa: E402, F401  (the stand-in: Krita's QApplication, and PyQt5 refused when playing Krita 6)
import underpaint_krita  # noqa: E402, F401  (registers the extension and the docker, as in Krita)

outcomes = {}
for name in sorted(n for n in vars(checks) if n.startswith("check_")):
    try:
        getattr(checks, name)()
        outcomes[name] = "passed"
    except Exception:
        outcomes[name] = traceback.format_exc()
Path(sys.argv[1]).write_text(json.dumps(outcomes, indent=1))
