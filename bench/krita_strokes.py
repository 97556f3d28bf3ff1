"""What waiting for the artist's strokes costs live mode in freshness, in GUI Krita.

The plugin reads the canvas and writes the preview layer only once the artist has stopped painting
(docs/live.md, "Strokes come first"): no frame goes out during a stroke, and after it the plugin
waits for Krita to finish the stroke and then for the stroke guard's settle time. Measured here:
from the release of the last stroke to the frame that includes it, and to its picture on the
canvas; and how long a picture that arrived during a stroke waits after the release. Once with
the plugin's settle time and once with none, to tell the two costs apart.

GUI Krita under Xvfb with the installed plugin, against a real server with the tiny test model;
the strokes are xdotool drags (tests/krita/scenarios.py, gui_strokes). Without the guard a frame
would go out at the next check after the last change, 0-0.2 s after the release (0.1 s on
average), and end the stroke.

Run: python -m bench.krita_strokes  → bench/results/krita_strokes.json
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from bench.report import write_report
from testing.krita import KritaHome, run_gui
from testing.processes import ServerProcess
from testing.tiny_models import write_tiny_models

# The plugin's Krita-free modules, imported as Krita imports them (top-level underpaint_krita).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))
from underpaint_krita.stroke_guard import StrokeGuard  # noqa: E402

STROKES = 6  # documents per settle time, each with two strokes


def _delays(events: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds from the releases to what followed them, from one document's timeline."""
    releases = [t for t, e in events if e == "released"]

    def first(event: str, after: float) -> float:
        return min(t for t, e in events if e == event and t > after)

    frame = first("frame sent", releases[-1])
    return {"frame_after_release": frame - releases[-1],
            "picture_after_release": first("picture shown", frame) - releases[-1],
            "generation": first("picture shown", frame) - frame,
            "waiting_picture_after_release": first("picture shown", releases[0]) - releases[0]}


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main() -> None:
    settle = StrokeGuard().settle
    report: dict = {"strokes": STROKES, "canvas": [640, 480], "model": "tiny-sd15-inpaint",
                    "without_guard_frame_after_release": {"mean": 0.1, "max": 0.2}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_tiny_models(work / "models")
        server = ServerProcess(work / "models", work / "server")
        server.start()
        try:
            home = KritaHome(work / "home")
            for wait in (settle, 0.0):
                found = run_gui(home, "gui_strokes", server.url, model="tiny-sd15-inpaint",
                                cases=[f"live-{i}" for i in range(STROKES)], size=report["canvas"], points=100,
                                pause=0.02, steps=4, settle=wait)
                delays = [_delays(case["timeline"]) for case in found["cases"].values()]
                report[f"settle_{wait:g}_s"] = {key: _summary([d[key] for d in delays]) for key in delays[0]}
        finally:
            server.kill()
    write_report(report, "krita_strokes", show=True)


if __name__ == "__main__":
    main()
