"""What gathering pictures for training costs in real Krita (the Train dialog, docs/plugin.md "Train"):
on a 4096² canvas of four layers, the seconds per visible layer and per open image, the bytes sent per
picture against the layer's raw pixels, and how much Krita's peak memory grows while reading.

Runs the plugin's own KritaWorkspace inside kritarunner (headless), the plugin installed as the
installer does it.

Run: python -m bench.krita_training  → bench/results/krita_training.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.report import write_report
from testing.krita import KritaHome, run_scenario


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        found = run_scenario(KritaHome(Path(tmp)), "training_pictures_cost", side=4096, layers=4, training_side=512,
                             server="")
    found.pop("log", None)
    write_report(found, "krita_training", show=True)


if __name__ == "__main__":
    main()
