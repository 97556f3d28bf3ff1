"""Live mode's change detection in real Krita: CPU share on a 4096² canvas at the plugin's rate
(a check every 0.2 s).

Runs the plugin's own LiveSession and KritaDocument inside kritarunner (headless), the plugin
installed as the installer does it. Target: at most 10% of one core.

Run: python -m bench.krita_live  → bench/results/krita_live.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.report import write_report
from testing.krita import KritaHome, run_scenario


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        found = run_scenario(KritaHome(Path(tmp)), "live_detection_cost", side=4096, seconds=10.0)
    found.pop("log", None)
    report = {**found, "target_cpu_share": 0.10}
    write_report(report, "krita_live", show=True)


if __name__ == "__main__":
    main()
