"""Which Krita this user has, seen from outside Krita, and how the plugin stands with that version.

The installer and `underpaint doctor` run in the server's Python, not in Krita, so they read the
version from what each kind of install leaves on disk:
- Linux: the AppStream file that Krita's packages carry (Debian, Ubuntu, Fedora, Arch, Flatpak,
  Snap), whose newest `<release version=…>` is the version installed;
- macOS: `CFBundleShortVersionString` in krita.app's Info.plist (/Applications, ~/Applications);
- Windows: the uninstall entry Krita's installer writes in the registry (`DisplayVersion`).
An AppImage or an unpacked build leaves none of these, and is reported as not found.

The plugin is written for Krita 5.1 to 5.3 (Qt 5, PyQt5) and 6.0 (Qt 6, PyQt6); its real-Krita
tests run in Krita 5.1.5 (docs/plugin.md says how each version is tested).
"""

from __future__ import annotations

import itertools
import plistlib
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.paths import krita_data_dir, platform_context

TESTED = "5.1.5"  # the Krita the real-Krita tests run in
TESTED_SERIES = "5.1"
WRITTEN_FOR = ("5.1", "5.2", "5.3", "6.0")
SUPPORTED = "5.1–5.3 and 6.0"

_METAINFO_FILES = ("org.kde.krita.appdata.xml", "org.kde.krita.metainfo.xml")
_FLATPAK_APP = "flatpak/app/org.kde.krita/current/active/files/share/metainfo"
_UNINSTALL = r"Software\Microsoft\Windows\CurrentVersion\Uninstall"
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")

# (where, display name, version) of each program the Windows registry lists as installed
Registry = Callable[[], Iterable[tuple[str, str, str]]]


@dataclass(frozen=True)
class KritaInstall:
    version: str
    source: str  # the file or registry entry the version was read from


def find_krita(platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None,
               root: Path = Path("/"), registry: Registry | None = None) -> list[KritaInstall]:
    """Every Krita install whose version can be read (`root` stands for the file system's root)."""
    platform, env, home = platform_context(platform, env, home)
    if platform == "windows":
        return _from_registry(registry or _windows_registry)
    if platform == "macos":
        bundles = [root / "Applications", home / "Applications"]
        return [found for folder in bundles if (found := _from_plist(folder / "krita.app" / "Contents" / "Info.plist"))]
    # The user's Flatpak installs live beside Krita's own data folder (both under XDG_DATA_HOME).
    system = ("usr/share/metainfo", "usr/local/share/metainfo", "snap/krita/current/usr/share/metainfo",
              f"var/lib/{_FLATPAK_APP}")
    folders = [*(root / folder for folder in system), krita_data_dir(platform, env, home).parent / _FLATPAK_APP]
    files = [folder / name for folder in folders for name in _METAINFO_FILES]
    return [found for file in files if (found := _from_metainfo(file))]


def assessment(version: str) -> str:
    """How the plugin stands with Krita `version`: "tested", or a warning the user can act on."""
    parts = _numbers(version)
    if parts is None:
        return f"warning: a version this plugin does not understand; it supports Krita {SUPPORTED}"
    series = f"{parts[0]}.{parts[1]}"
    if series == TESTED_SERIES:
        return "tested" if version == TESTED else f"tested with {TESTED} of the same series"
    if series in WRITTEN_FOR:
        how = ("its Qt 6 code is tested with PyQt6 outside Krita" if parts[0] == 6
               else f"its tests run in Krita {TESTED}, on the same Qt 5")
        return f"warning: not tested in this version, though the plugin is written for it ({how})"
    if parts[:2] < (5, 1):
        return "warning: too old: the plugin needs Krita 5.1 or newer; update Krita"
    return f"warning: newer than the versions the plugin is written for ({SUPPORTED}); it may work, untested"


def krita_lines(installs: list[KritaInstall]) -> list[str]:
    """One report line per Krita found, or one saying none was."""
    if not installs:
        return [f"krita: no installed Krita found (an AppImage cannot be seen from here); "
                f"the plugin supports Krita {SUPPORTED}"]
    return [f"krita: {found.version} ({found.source}): {assessment(found.version)}" for found in installs]


def _numbers(version: str) -> tuple[int, int, int] | None:
    match = _VERSION.match(version.strip())
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _from_metainfo(path: Path) -> KritaInstall | None:
    try:
        releases = ElementTree.parse(path).getroot().iter("release")
    except (OSError, ElementTree.ParseError):
        return None
    versions = [release.get("version", "") for release in releases]
    readable = [version for version in versions if _numbers(version) is not None]
    return KritaInstall(max(readable, key=_numbers), str(path)) if readable else None


def _from_plist(path: Path) -> KritaInstall | None:
    try:
        with path.open("rb") as file:
            version = str(plistlib.load(file).get("CFBundleShortVersionString", ""))
    except (OSError, plistlib.InvalidFileException, ValueError):
        return None
    return KritaInstall(version, str(path)) if _numbers(version) is not None else None


def _from_registry(registry: Registry) -> list[KritaInstall]:
    found = []
    for where, name, version in registry():
        numbers = _numbers(version)
        if name.lower().startswith("krita") and numbers is not None:
            found.append(KritaInstall(".".join(map(str, numbers)), where))
    return found


def _windows_registry() -> Iterator[tuple[str, str, str]]:
    """The registry's uninstall entries (Windows only: winreg exists nowhere else)."""
    import winreg

    for hive, hive_name in ((winreg.HKEY_LOCAL_MACHINE, "HKLM"), (winreg.HKEY_CURRENT_USER, "HKCU")):
        try:
            uninstall = winreg.OpenKey(hive, _UNINSTALL)
        except OSError:
            continue
        with uninstall:
            for index in itertools.count():
                try:
                    key = winreg.EnumKey(uninstall, index)
                except OSError:
                    break
                try:
                    with winreg.OpenKey(uninstall, key) as entry:
                        name = winreg.QueryValueEx(entry, "DisplayName")[0]
                        version = winreg.QueryValueEx(entry, "DisplayVersion")[0]
                except OSError:
                    continue
                yield f"{hive_name}\\{_UNINSTALL}\\{key}", str(name), str(version)
