"""The `underpaint` launcher: a script that runs `installer.launch` with the server environment's
Python and the models folders in `UNDERPAINT_MODELS`, so `underpaint serve` works from any shell."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from . import APP_NAME, InstallError
from .launch import MODELS_VARIABLE

MARKER = "Written by the Underpaint installer"


def launcher_name(platform: str) -> str:
    return f"{APP_NAME}.cmd" if platform == "windows" else APP_NAME


def launcher_text(platform: str, python: Path, models_dirs: Sequence[Path]) -> str:
    """The script's text; folders are joined with the platform's path separator. Python runs
    isolated (-I) so a folder named like one of our packages in the current directory cannot
    shadow it."""
    if platform == "windows":
        # In a .cmd file a literal % must be doubled.
        models = ";".join(str(folder) for folder in models_dirs).replace("%", "%%")
        target = str(python).replace("%", "%%")
        return (
            f"@echo off\r\nrem {MARKER}: runs the server from its own environment.\r\n"
            f'set "{MODELS_VARIABLE}={models}"\r\n"{target}" -I -m installer.launch %*\r\n'
        )
    models = ":".join(str(folder) for folder in models_dirs)
    return (
        f"#!/bin/sh\n# {MARKER}: runs the server from its own environment.\n"
        f"{MODELS_VARIABLE}={shlex.quote(models)}\nexport {MODELS_VARIABLE}\n"
        f'exec {shlex.quote(str(python))} -I -m installer.launch "$@"\n'
    )


def write_launcher(folder: Path, platform: str, python: Path, models_dirs: Sequence[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / launcher_name(platform)
    if path.exists() and not is_ours(path):
        raise InstallError(
            f"{path} exists and was not written by the Underpaint installer",
            "put the launcher elsewhere with --bin-dir DIR, or move that file away",
        )
    path.write_text(launcher_text(platform, python, models_dirs), encoding="utf-8", newline="")
    path.chmod(0o755)
    return path


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def remove_launcher(path: Path) -> bool:
    """Remove a launcher this installer wrote; anything else at that path is left alone."""
    if not is_ours(path):
        return False
    path.unlink()
    return True
