"""Krita with the plugin installed the way the installer does it, playing a scenario of
tests/krita/scenarios.py that writes what it found as JSON: headless in kritarunner, or as the GUI
on a private Xvfb display driven by the test-only driver plugin (tests/krita/underpaint_test_driver).

Krita runs in a clean environment (env -i): only HOME, PATH, fresh XDG folders holding the
installed plugin, and PYTHONPATH naming tests/krita. A virtualenv or our own site-packages
would break Krita's Python.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from shared.images import encode_png

from .processes import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "krita"
KRITARUNNER = shutil.which("kritarunner")
KRITA = shutil.which("krita")
XVFB = shutil.which("Xvfb")


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


class Display:
    """A private Xvfb display."""

    def __init__(self) -> None:
        self.number = 90 + free_port() % 400
        self.process = subprocess.Popen([XVFB, f":{self.number}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        socket = Path(f"/tmp/.X11-unix/X{self.number}")
        deadline = time.monotonic() + 10
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


def run_gui(home: KritaHome, scenario: str, server: str, timeout: float = 300,
            preferences: dict[str, str] | None = None, **job: object) -> dict:
    """Start GUI Krita on a private display with the test driver plugin running `scenario`;
    `preferences` are the plugin's settings in kritarc, as a previous Krita session left them."""
    for item in ("underpaint_test_driver", "underpaint_test_driver.desktop"):
        target = home.pykrita / item
        if target.is_dir():
            shutil.rmtree(target)
        (shutil.copytree if (SCRIPTS / item).is_dir() else shutil.copy)(SCRIPTS / item, target)
    (home.config / "kritarc").write_text(
        "[python]\nenable_underpaint_krita=true\nenable_underpaint_test_driver=true\n\n"
        f"[underpaint]\nserver_url={server}\n" + "".join(f"{k}={v}\n" for k, v in (preferences or {}).items())
    )
    job_path, output = home.write_job(scenario, scenario=scenario, **job)
    start = home.root / "start.png"  # the driver waits for a document's view; Krita opens this one
    start.write_bytes(encode_png(bytes([255, 255, 255, 255]) * 64 * 64, 64, 64))
    display = Display()
    try:
        env = home.env(DISPLAY=f":{display.number}", UNDERPAINT_KRITA_JOB=str(job_path))
        done = subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in env.items()], KRITA, "--nosplash", str(start)],
                              capture_output=True, text=True, timeout=timeout, cwd=home.root)
    finally:
        display.close()
    found = findings(output, done.stdout + done.stderr)
    found["log"] = done.stdout + done.stderr
    return found
