"""Krita run headless by kritarunner, with the plugin installed the way the installer does it,
playing a scenario of tests/krita/scenarios.py that writes what it found as JSON.

Krita runs in a clean environment (env -i): only HOME, PATH, fresh XDG folders holding the
installed plugin, and PYTHONPATH naming tests/krita. A virtualenv or our own site-packages
would break Krita's Python.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "krita"
KRITARUNNER = shutil.which("kritarunner")


class KritaHome:
    """Fresh HOME and XDG folders with the plugin installed the way the installer does it."""

    def __init__(self, root: Path):
        from installer.krita_plugin import build_plugin, with_plugin_enabled

        self.root = root
        self.data, self.config = root / "data", root / "config"
        self.pykrita = self.data / "krita" / "pykrita"
        build_plugin(self.pykrita)
        for rc in ("kritarc", "kritarunnerrc"):
            (self.config / rc).parent.mkdir(parents=True, exist_ok=True)
            (self.config / rc).write_text(with_plugin_enabled("", True))

    def env(self, **extra: str) -> dict[str, str]:
        runtime = self.root / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        return {"HOME": str(self.root), "PATH": "/usr/bin:/bin", "XDG_DATA_HOME": str(self.data),
                "XDG_CONFIG_HOME": str(self.config), "XDG_RUNTIME_DIR": str(runtime),
                "PYTHONPATH": str(SCRIPTS), **extra}

    def write_job(self, name: str, **job: object) -> tuple[Path, Path]:
        output = self.root / f"{name}.json"
        output.unlink(missing_ok=True)
        path = self.root / f"{name}.job.json"
        path.write_text(json.dumps({"output": str(output), "pykrita": str(self.pykrita),
                                    "workdir": str(self.root), **job}))
        return path, output


def findings(output: Path, log: str) -> dict:
    """What a scenario wrote to `output`; `log` is Krita's output, shown when it wrote nothing."""
    assert output.exists(), f"the scenario wrote no findings; Krita's output:\n{log[-4000:]}"
    findings = json.loads(output.read_text())
    assert "error" not in findings, findings["error"]
    return findings


def run_scenario(home: KritaHome, function: str, timeout: float = 300, **job: object) -> dict:
    """Run `function` of tests/krita/scenarios.py in kritarunner with `job` as its settings; its findings."""
    job_path, output = home.write_job(function, **job)
    env = home.env(QT_QPA_PLATFORM="offscreen", UNDERPAINT_KRITA_JOB=str(job_path))
    done = subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in env.items()], KRITARUNNER, "-s", "scenarios",
                           "-f", function], capture_output=True, text=True, timeout=timeout, cwd=home.root)
    found = findings(output, done.stdout + done.stderr)
    found["log"] = done.stdout + done.stderr
    return found
