"""The plugin under both Qt bindings Krita embeds: PyQt5 (Krita 5) and PyQt6 (Krita 6).

No Krita 6 can be installed on these machines (docs/plugin.md), so its Qt is played here: each
binding runs in a Python process of its own, as in Krita, which refuses a second Qt in its process.
tests/qt/run.py imports the plugin there beside stand-ins for Krita's `krita` and `pykrita` modules
(offscreen) and runs the checks of tests/qt/checks.py; each check is a test here, once per binding.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_support import PLUGIN_SOURCE, REPO

CHECKS_FOLDER = REPO / "tests" / "qt"
CHECKS = [node.name for node in ast.parse((CHECKS_FOLDER / "checks.py").read_text()).body
          if isinstance(node, ast.FunctionDef) and node.name.startswith("check_")]
BINDINGS = {"PyQt5": "5", "PyQt6": "6"}  # the binding and the Krita that embeds it
PACKAGE = PLUGIN_SOURCE / "underpaint_krita"


@pytest.fixture(scope="module", params=list(BINDINGS))
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    binding = request.param
    if importlib.util.find_spec(binding) is None:  # finding it does not import it into this process
        pytest.skip(f"{binding} is not installed (requirements/test.lock has it)")
    output = tmp_path_factory.mktemp(binding) / "outcomes.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", UNDERPAINT_FAKE_KRITA_QT=BINDINGS[binding])
    done = subprocess.run([sys.executable, str(CHECKS_FOLDER / "run.py"), str(output)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert output.exists(), f"the checks did not run under {binding}:\n{(done.stdout + done.stderr)[-4000:]}"
    return json.loads(output.read_text())


@pytest.mark.parametrize("check", CHECKS)
def test_under_each_binding(outcomes: dict[str, str], check: str) -> None:
    assert outcomes.get(check) == "passed", outcomes.get(check, f"{check} did not run")


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_only_the_compatibility_layer_imports_a_qt_binding() -> None:
    importers = {path.relative_to(PACKAGE).as_posix(): sorted(modules)
                 for path in sorted(PACKAGE.rglob("*.py"))
                 if (modules := {m for m in _imported_modules(path) if m.split(".")[0] in ("PyQt5", "PyQt6", "sip")})}
    assert list(importers) == ["qt.py"], importers
    assert importers["qt.py"] == ["PyQt5", "PyQt6"]
