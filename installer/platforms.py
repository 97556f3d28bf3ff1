"""Where things live on each operating system: the data folder, Krita's folders, the launcher.

Every function takes the platform and environment as arguments (defaulting to the running
machine's) so the rules for all three systems can be tested on any of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from . import APP_NAME

PLATFORMS = ("linux", "windows", "macos")


def current_platform() -> str:
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


def _context(
    platform: str | None, env: Mapping[str, str] | None, home: Path | None
) -> tuple[str, Mapping[str, str], Path]:
    platform = platform or current_platform()
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}, not {platform!r}")
    return platform, os.environ if env is None else env, Path.home() if home is None else home


def _xdg(env: Mapping[str, str], name: str, home: Path, default: str) -> Path:
    # The XDG spec says relative values are invalid and must be ignored.
    value = env.get(name, "")
    return Path(value) if value and os.path.isabs(value) else home / default


def _windows_folder(env: Mapping[str, str], name: str, home: Path, default: str) -> Path:
    value = env.get(name, "")
    return Path(value) if value else home / default


def data_dir(platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """The default install folder: the server's environment, models and launcher state."""
    platform, env, home = _context(platform, env, home)
    if platform == "windows":
        return _windows_folder(env, "LOCALAPPDATA", home, "AppData/Local") / APP_NAME
    if platform == "macos":
        return home / "Library" / "Application Support" / APP_NAME
    return _xdg(env, "XDG_DATA_HOME", home, ".local/share") / APP_NAME


def krita_data_dir(platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Krita's resource folder, which holds `pykrita/`."""
    platform, env, home = _context(platform, env, home)
    if platform == "windows":
        return _windows_folder(env, "APPDATA", home, "AppData/Roaming") / "krita"
    if platform == "macos":
        return home / "Library" / "Application Support" / "krita"
    return _xdg(env, "XDG_DATA_HOME", home, ".local/share") / "krita"


def kritarc_path(platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Krita's settings file, where enabled Python plugins are recorded."""
    platform, env, home = _context(platform, env, home)
    if platform == "windows":
        return _windows_folder(env, "LOCALAPPDATA", home, "AppData/Local") / "kritarc"
    if platform == "macos":
        return home / "Library" / "Preferences" / "kritarc"
    return _xdg(env, "XDG_CONFIG_HOME", home, ".config") / "kritarc"


def launcher_dir(
    install_dir: Path,
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """Where the `underpaint` launcher goes: `~/.local/bin` is on PATH on most Linux and macOS
    setups; Windows has no such folder, so the launcher stays in the install folder."""
    platform, env, home = _context(platform, env, home)
    if platform == "windows":
        return install_dir
    return home / ".local" / "bin"


def venv_script(venv: Path, name: str, platform: str | None = None) -> Path:
    """A program inside a virtual environment (`python`, `underpaint`)."""
    if (platform or current_platform()) == "windows":
        return venv / "Scripts" / f"{name}.exe"
    return venv / "bin" / name
