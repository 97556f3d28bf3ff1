"""Where the benchmarks keep their figures: one indented JSON file each, under bench/results/.

The committed files are what the README and docs quote, so every bench writes them the same way
and a rerun shows as a readable diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def result_path(name: str) -> Path:
    """The committed results file of the bench called `name`."""
    return RESULTS / f"{name}.json"


def write_report(report: dict[str, Any], out: str | Path, *, show: bool = False) -> Path:
    """Write `report` to `out` (a bench's name, or a file), making the folder; `show` prints it too."""
    out = result_path(out) if isinstance(out, str) else out
    text = json.dumps(report, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    if show:
        print(text)
    return out
