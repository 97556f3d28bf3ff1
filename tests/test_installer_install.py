"""`python installer/install.py` for real: a virtual environment with the project installed by pip,
the plugin in a Krita folder, the launcher, models from an offline folder; then a re-run that
repairs and updates, and uninstalling. Offline and fast: the environment sees this Python's
packages (--system-site-packages), so nothing is downloaded."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

from test_installer_download import FileServer

from installer.krita_plugin import is_enabled, is_installed
from installer.launcher import launcher_name
from installer.platforms import venv_script
from shared.paths import current_platform

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PARTS = ("pyproject.toml", "requirements", "server", "shared", "installer", "plugin")


def copy_project(dest: Path) -> Path:
    """A copy of the project to install from, so building it leaves nothing in the work tree."""
    dest.mkdir()
    for part in PROJECT_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / part)
    return dest


def fake_plugin(dest: Path) -> Path:
    (dest / "underpaint_krita").mkdir(parents=True)
    (dest / "underpaint_krita" / "__init__.py").write_text("")
    (dest / "underpaint_krita.desktop").write_text("[Desktop Entry]\nX-KDE-Library=underpaint_krita\n")
    return dest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Setup:
    def __init__(self, tmp: Path, model_url: str = "https://example.invalid/tiny.safetensors"):
        self.tmp = tmp
        self.project = copy_project(tmp / "source copy")
        self.install_dir = tmp / "install dir"
        self.krita = tmp / "krita data"
        self.bin = tmp / "bin"
        self.a1111 = tmp / "A1111 models"
        self.a1111.mkdir()
        self.offline = tmp / "offline"
        self.offline.mkdir()
        self.model = b"not really a checkpoint" * 100
        (self.offline / "tiny.safetensors").write_bytes(self.model)
        self.manifest = tmp / "manifest.json"
        self.manifest.write_text(
            json.dumps(
                {
                    "files": [
                        {
                            "name": "Tiny",
                            "url": model_url,
                            "sha256": hashlib.sha256(self.model).hexdigest(),
                            "destination": "checkpoints/tiny.safetensors",
                            "family": "sd15",
                            "role": "checkpoint-artwork",
                        }
                    ],
                    "sets": {"tiny": ["Tiny"], "none": []},
                }
            )
        )
        self.plugin = fake_plugin(tmp / "plugin source")
        home = tmp / "home"
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
        }
        self.kritarc = home / "config" / "kritarc"
        self.venv = self.install_dir / "venv"

    def install(self, *extra: str, check: bool = True, offline: bool = True) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            str(self.project / "installer" / "install.py"),
            "--dir", str(self.install_dir),
            "--torch", "cpu",
            "--system-site-packages",
            *(["--offline", str(self.offline)] if offline else []),
            "--manifest", str(self.manifest),
            "--krita-dir", str(self.krita),
            "--bin-dir", str(self.bin),
            "--plugin-source", str(self.plugin),
            *extra,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=self.env, cwd=self.tmp, timeout=300)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def venv_python(self) -> Path:
        return venv_script(self.venv, "python")


def test_install_rerun_and_uninstall(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    launcher = setup.bin / launcher_name(current_platform())
    model = setup.install_dir / "models" / "checkpoints" / "tiny.safetensors"

    # 1. A fresh install.
    setup.install("--model-set", "tiny", "--models", str(setup.a1111))
    installed = subprocess.run(
        [str(setup.venv_python()), "-I", "-c", "import shared, installer; print(shared.__file__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(installed.stdout.strip()).is_relative_to(setup.venv)
    assert is_installed(setup.krita) and is_enabled(setup.kritarc)
    assert (setup.krita / "pykrita" / "underpaint_krita" / "vendor" / "websockets").is_dir()
    assert model.read_bytes() == setup.model

    # The launcher runs the server's command line from the environment with the models folders.
    doctor = subprocess.run(
        [str(launcher), "doctor", "--port", str(free_port())],
        capture_output=True, text=True, env=setup.env, timeout=120,
    )  # fmt: skip
    assert doctor.returncode == 0, doctor.stderr
    assert f"models folder: {setup.install_dir / 'models'}\n" in doctor.stdout
    assert f"models folder: {setup.a1111}\n" in doctor.stdout

    # 2. A re-run repairs a broken environment, installs the updated source, keeps the
    # registered folder and trusts the verified model without re-copying it.
    setup.venv_python().unlink()
    (setup.project / "shared" / "update_marker.py").write_text("VERSION = 2\n")
    model_time = model.stat().st_mtime_ns
    rerun = setup.install()  # the model set and folders are remembered
    assert "is broken" in rerun.stdout and "Tiny: already verified" in rerun.stdout
    assert model.stat().st_mtime_ns == model_time
    updated = subprocess.run(
        [str(setup.venv_python()), "-I", "-c", "import shared.update_marker as m; print(m.VERSION)"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert updated.stdout.strip() == "2", updated.stderr
    assert str(setup.a1111) in launcher.read_text()

    # 3. Uninstalling keeps the models unless asked to delete them.
    setup.install("--uninstall")
    assert not setup.venv.exists() and not launcher.exists()
    assert not is_installed(setup.krita) and not is_enabled(setup.kritarc)
    assert model.read_bytes() == setup.model
    setup.install("--uninstall", "--purge-models")
    assert not setup.install_dir.exists()
    assert setup.a1111.is_dir()


def test_unknown_model_set_fails_before_installing_anything(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    done = setup.install("--model-set", "nonsense", check=False)
    assert done.returncode == 1
    assert "error: there is no model set 'nonsense'\n  what to do: choose one of: tiny, none" in done.stdout
    assert not setup.install_dir.exists()


def test_old_python_gets_a_message_not_a_traceback() -> None:
    script = ROOT / "installer" / "install.py"
    # The version check must be reachable: the file parses with an old grammar.
    ast.parse(script.read_text(encoding="utf-8"), feature_version=(3, 8))
    pretend = f"import runpy, sys; sys.version_info = (3, 9, 2); runpy.run_path({str(script)!r}, run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", pretend], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("error: Underpaint needs Python 3.11 or newer; this is Python 3.9.2 (")
    assert "what to do: install Python 3.11+" in done.stderr


def test_install_finishes_without_the_pytorch_index_or_the_model_host(tmp_path: Path) -> None:
    """The README's promise: with only the package registry reachable, the install ends (exit 0),
    says what it could not fetch, and `underpaint models download` fetches it later."""
    files = FileServer()
    thread = threading.Thread(target=files.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        setup = Setup(tmp_path, model_url=files.url("/tiny.safetensors"))  # 404 until it is added below
        refused_index = f"http://127.0.0.1:{free_port()}/whl/cpu"
        done = setup.install("--model-set", "tiny", "--torch-index", refused_index, offline=False)
        out = done.stdout
        assert "PyTorch's index: " in out and "installing PyPI's PyTorch instead" in out
        missing = files.url("/tiny.safetensors")
        assert f"could not download Tiny from 127.0.0.1: {missing} was not found (HTTP 404)" in out
        assert "The server will use the built-in demo model until a checkpoint is in place." in out
        assert "Run `underpaint models download` later" in out
        launcher = setup.bin / launcher_name(current_platform())
        assert launcher.exists() and out.rstrip().endswith("the Underpaint docker is under Settings > Dockers.")

        # Later, with the host back: the command fetches what is missing.
        files.files["/tiny.safetensors"] = setup.model
        fetch = ["models", "download", "--dir", str(setup.install_dir), "--manifest", str(setup.manifest)]
        later = subprocess.run([str(launcher), *fetch], capture_output=True, text=True, env=setup.env, timeout=120)
        assert later.returncode == 0, later.stdout + later.stderr
        assert "Tiny: downloaded" in later.stdout
        assert (setup.install_dir / "models" / "checkpoints" / "tiny.safetensors").read_bytes() == setup.model
    finally:
        files.shutdown()
        files.server_close()
