"""The `underpaint` launcher script, what it runs, and `underpaint doctor`'s report."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from installer import InstallError
from installer.doctor import report
from installer.krita_plugin import install_plugin
from installer.launch import with_models
from installer.launcher import launcher_text, remove_launcher, write_launcher


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve", "--port", "1"], ["serve", "--models", "/a", "--models", "/b c", "--port", "1"]),
        (["doctor"], ["doctor", "--models", "/a", "--models", "/b c"]),
        (["generate", "--prompt", "x"], ["generate", "--prompt", "x"]),
        (["--help"], ["--help"]),
        ([], []),
    ],
)
def test_models_folders_become_options_of_serve_and_doctor(argv: list[str], expected: list[str]) -> None:
    assert with_models(argv, ["/a", "/b c"]) == expected


def test_windows_launcher_text() -> None:
    text = launcher_text("windows", Path("C:/Up 100%/venv/Scripts/python.exe"), [Path("C:/m"), Path("D:/A1111")])
    lines = text.split("\r\n")
    assert lines[0] == "@echo off"
    assert lines[2] == 'set "UNDERPAINT_MODELS=C:/m;D:/A1111"'
    assert lines[3] == '"C:/Up 100%%/venv/Scripts/python.exe" -I -m installer.launch %*'


def test_posix_launcher_passes_arguments_and_folders_intact(tmp_path: Path) -> None:
    # A stand-in for the environment's Python that prints what it was given.
    python = tmp_path / "it's a venv" / "python"
    python.parent.mkdir()
    python.write_text('#!/bin/sh\necho "$UNDERPAINT_MODELS"\nprintf "%s\\n" "$@"\n')
    python.chmod(0o755)
    folders = [tmp_path / "my models", tmp_path / "A1111 $HOME"]
    launcher = write_launcher(tmp_path / "bin", "linux", python, folders)
    done = subprocess.run([str(launcher), "serve", "two words", "*"], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        f"{folders[0]}:{folders[1]}",
        "-I", "-m", "installer.launch", "serve", "two words", "*",
    ]  # fmt: skip


def test_launcher_never_overwrites_or_removes_a_foreign_file(tmp_path: Path) -> None:
    foreign = tmp_path / "underpaint"
    foreign.write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(InstallError, match="--bin-dir"):
        write_launcher(tmp_path, "linux", Path("/v/bin/python"), [])
    assert not remove_launcher(foreign)
    assert foreign.read_text() == "#!/bin/sh\necho mine\n"
    ours = write_launcher(tmp_path / "bin", "linux", Path("/v/bin/python"), [])
    assert write_launcher(tmp_path / "bin", "linux", Path("/v/bin/python"), [tmp_path]) == ours
    assert remove_launcher(ours) and not ours.exists()


# ---- doctor ----


def entry(name: str, kind: str = "checkpoint", refused: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(name=name, kind=kind, family="sd15", variant="regular", refused=refused)


def test_doctor_lists_models_and_refusals(tmp_path: Path) -> None:
    found = [entry("dreamshaper"), entry("old", refused="pickle files are not loaded"), entry("hyper", "lora")]
    lines = report([tmp_path, tmp_path / "gone"], 0, scan=lambda folders: found)
    assert lines[0].startswith("python: 3.")
    assert any(line.startswith("torch: ") for line in lines)
    assert f"models folder: {tmp_path}" in lines
    assert f"models folder: {tmp_path / 'gone'} (missing)" in lines
    assert "model: dreamshaper (sd15 checkpoint regular)" in lines
    assert "refused: old (sd15 checkpoint regular): pickle files are not loaded" in lines
    assert not any("no usable checkpoint" in line for line in lines)


def test_doctor_says_what_to_do_without_a_checkpoint(tmp_path: Path) -> None:
    lines = report([], 0, scan=lambda folders: [entry("old", refused="broken"), entry("hyper", "lora")])
    assert "models folder: none given (pass --models DIR)" in lines
    assert any(line.startswith("no usable checkpoint: download one") for line in lines)

    def failing(folders: list[Path]) -> list:
        raise PermissionError("denied")

    lines = report([tmp_path], 0, scan=failing)
    assert "models: cannot be scanned (PermissionError: denied)" in lines


def test_doctor_port_and_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        lines = report([], port, scan=lambda folders: [])
    assert any(line.startswith(f"port {port}: in use") for line in lines)
    assert any(line.startswith("krita plugin: not installed") for line in lines)

    source = tmp_path / "plugin"
    (source / "underpaint_krita").mkdir(parents=True)
    (source / "underpaint_krita" / "__init__.py").write_text("")
    (source / "underpaint_krita.desktop").write_text("[Desktop Entry]\n")
    install_plugin(source=source)
    lines = report([], port, scan=lambda folders: [])
    assert f"port {port}: free" in lines
    assert f"krita plugin: installed in {tmp_path / 'data' / 'krita' / 'pykrita'} and enabled" in lines


def test_doctor_with_the_server_registry(models_dir: Path) -> None:
    lines = report([models_dir], 0)
    assert "model: tiny-sd15 (sd15 checkpoint regular)" in lines
    assert any(line.startswith("refused: old") for line in lines)
