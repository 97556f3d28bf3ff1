"""Where things live on each operating system: Underpaint's data folder (the installer's
environment and models, the server's results) and Krita's folders.

Plain Python: the installer runs this before anything is installed. Every function takes the
platform and environment as arguments (defaulting to the running machine's) so the rules for all
three systems can be tested on any of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

APP_NAME = "underpaint"

PLATFORMS = ("linux", "windows", "macos")


def current_platform() -> str:
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


def platform_context(
    platform: str | None, env: Mapping[str, str] | None, home: Path | None
) -> tuple[str, Mapping[str, str], Path]:
    platform = platform or current_platform()
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}, not {platform!r}")
    return platform, os.environ if env is None else env, Path.home() if home is None else home


# Each kind of folder per platform: the environment variable that moves it (macOS has none) and
# where it is under the home folder otherwise.
_Place = tuple[str | None, str]
_LOCAL_DATA: dict[str, _Place] = {
    "linux": ("XDG_DATA_HOME", ".local/share"),
    "macos": (None, "Library/Application Support"),
    "windows": ("LOCALAPPDATA", "AppData/Local"),
}
_ROAMING_DATA: dict[str, _Place] = {**_LOCAL_DATA, "windows": ("APPDATA", "AppData/Roaming")}
_CONFIG: dict[str, _Place] = {
    "linux": ("XDG_CONFIG_HOME", ".config"),
    "macos": (None, "Library/Preferences"),
    "windows": ("LOCALAPPDATA", "AppData/Local"),
}


def _folder(
    places: Mapping[str, _Place], platform: str | None, env: Mapping[str, str] | None, home: Path | None
) -> Path:
    platform, env, home = platform_context(platform, env, home)
    variable, default = places[platform]
    value = env.get(variable, "") if variable else ""
    # The XDG spec says relative values are invalid and must be ignored; Windows paths are taken as
    # given, since a drive path is not absolute to a POSIX os.path (and the rules are tested there).
    if value and (platform == "windows" or os.path.isabs(value)):
        return Path(value)
    return home / default


def data_dir(platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """The default install folder: the server's environment, models, results and launcher state."""
    return _folder(_LOCAL_DATA, platform, env, home) / APP_NAME


def krita_data_dir(platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Krita's resource folder, which holds `pykrita/`."""
    return _folder(_ROAMING_DATA, platform, env, home) / "krita"


def kritarc_path(platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Krita's settings file, where enabled Python plugins are recorded."""
    return _folder(_CONFIG, platform, env, home) / "kritarc"
