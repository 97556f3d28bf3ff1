"""Which Krita the installer and `underpaint doctor` find, and what they say about its version."""

from __future__ import annotations

import plistlib
import shutil
from pathlib import Path

import pytest

from installer.doctor import report
from installer.krita_version import KritaInstall, assessment, find_krita, krita_lines

METAINFO = """<?xml version="1.0" encoding="utf-8"?>
<component type="desktop-application">
  <id>org.kde.krita</id>
  <releases>
    {releases}
  </releases>
</component>
"""


def _metainfo(path: Path, *versions: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(METAINFO.format(releases="\n    ".join(f'<release version="{v}"/>' for v in versions)))
    return path


@pytest.mark.parametrize(
    "version, said",
    [
        ("5.1.5", "tested"),
        ("5.1.7", "tested with 5.1.5 of the same series"),
        ("5.2.6", "warning: not tested in this version, though the plugin is written for it (its tests run in "
                  "Krita 5.1.5, on the same Qt 5)"),
        ("5.3.0", "warning: not tested in this version, though the plugin is written for it (its tests run in "
                  "Krita 5.1.5, on the same Qt 5)"),
        ("6.0.1", "warning: not tested in this version, though the plugin is written for it (its Qt 6 code is "
                  "tested with PyQt6 outside Krita)"),
        ("5.0.2", "warning: too old: the plugin needs Krita 5.1 or newer; update Krita"),
        ("4.4.8", "warning: too old: the plugin needs Krita 5.1 or newer; update Krita"),
        ("6.1.0", "warning: newer than the versions the plugin is written for (5.1–5.3 and 6.0); it may work, "
                  "untested"),
        ("git", "warning: a version this plugin does not understand; it supports Krita 5.1–5.3 and 6.0"),
    ],
)
def test_what_each_version_gets(version: str, said: str) -> None:
    assert assessment(version) == said


def test_linux_packages_flatpak_and_broken_files(tmp_path: Path) -> None:
    root, home = tmp_path / "root", tmp_path / "home"
    package = _metainfo(root / "usr/share/metainfo/org.kde.krita.appdata.xml", "5.1.4", "5.1.5", "5.0.0")
    flatpak = _metainfo(home / ".local/share/flatpak/app/org.kde.krita/current/active/files/share/metainfo"
                        / "org.kde.krita.metainfo.xml", "6.0.1")
    (root / "usr/local/share/metainfo").mkdir(parents=True)
    (root / "usr/local/share/metainfo/org.kde.krita.appdata.xml").write_text("<component><releases>")
    _metainfo(root / "snap/krita/current/usr/share/metainfo/org.kde.krita.appdata.xml", "nightly")
    found = find_krita("linux", {}, home, root=root)
    assert found == [KritaInstall("5.1.5", str(package)), KritaInstall("6.0.1", str(flatpak))]
    # The user's Flatpak folder follows XDG_DATA_HOME, as Krita's own data folder does.
    moved = tmp_path / "data"
    shutil.copytree(home / ".local/share/flatpak", moved / "flatpak")
    found = find_krita("linux", {"XDG_DATA_HOME": str(moved)}, home, root=root)
    assert [i.version for i in found] == ["5.1.5", "6.0.1"]
    assert find_krita("linux", {}, tmp_path / "nobody", root=tmp_path / "empty") == []


def test_macos_reads_the_app_bundle(tmp_path: Path) -> None:
    root, home = tmp_path / "root", tmp_path / "home"
    plist = home / "Applications/krita.app/Contents/Info.plist"
    plist.parent.mkdir(parents=True)
    plist.write_bytes(plistlib.dumps({"CFBundleShortVersionString": "5.2.6", "CFBundleIdentifier": "org.krita"}))
    broken = root / "Applications/krita.app/Contents/Info.plist"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a plist")
    assert find_krita("macos", {}, home, root=root) == [KritaInstall("5.2.6", str(plist))]


def test_windows_reads_the_uninstall_entries() -> None:
    entries = [("HKLM\\...\\Uninstall\\Krita_x64", "Krita (x64) 5.2.6", "5.2.6.100"),
               ("HKLM\\...\\Uninstall\\GIMP", "GIMP 2.10", "2.10.38"),
               ("HKCU\\...\\Uninstall\\Krita", "Krita", "unknown")]
    found = find_krita("windows", {}, Path("C:/Users/a"), registry=lambda: entries)
    assert found == [KritaInstall("5.2.6", "HKLM\\...\\Uninstall\\Krita_x64")]


def test_report_lines_and_doctor() -> None:
    assert krita_lines([]) == ["krita: no installed Krita found (an AppImage cannot be seen from here); "
                               "the plugin supports Krita 5.1–5.3 and 6.0"]
    six = KritaInstall("6.0.1", "/var/lib/flatpak/…/org.kde.krita.metainfo.xml")
    lines = report([], 0, scan=lambda folders: [], krita=lambda: [six])
    (line,) = [line for line in lines if line.startswith("krita: ")]
    assert line == f"krita: 6.0.1 ({six.source}): {assessment('6.0.1')}"
