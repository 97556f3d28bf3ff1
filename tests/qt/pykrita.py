"""Stand-in for Krita's `pykrita` module: Krita 6's says which Qt Krita runs on, Krita 5's cannot.

$UNDERPAINT_FAKE_KRITA_QT names the Krita this process plays: 6 (PyQt6) or 5 (PyQt5).
"""

import os

if os.environ.get("UNDERPAINT_FAKE_KRITA_QT") == "6":

    def qt_major_version() -> int:
        return 6
