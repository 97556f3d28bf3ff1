"""Where the installer puts its own things: the launcher and the environment's programs.
The data and Krita folders every part of Underpaint shares are in `shared.paths`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shared.paths import current_platform, platform_context


def launcher_dir(
    install_dir: Path,
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """Where the `underpaint` launcher goes: `~/.local/bin` is on PATH on most Linux and macOS
    setups; Windows has no such folder, so the launcher stays in the install folder."""
    platform, env, home = platform_context(platform, env, home)
    if platform == "windows":
        return install_dir
    return home / ".local" / "bin"


def venv_script(venv: Path, name: str, platform: str | None = None) -> Path:
    """A program inside a virtual environment (`python`, `underpaint`)."""
    if (platform or current_platform()) == "windows":
        return venv / "Scripts" / f"{name}.exe"
    return venv / "bin" / name
