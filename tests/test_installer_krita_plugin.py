"""The plugin folder Krita loads: assembled with its vendored packages, enabled in kritarc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from installer import InstallError, krita_plugin
from installer.krita_plugin import (
    DESKTOP,
    build_plugin,
    install_plugin,
    is_enabled,
    is_installed,
    uninstall_plugin,
    with_plugin_enabled,
)

KEY = "enable_underpaint_krita"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A plugin source folder shaped like plugin/ (the real one is written elsewhere)."""
    root = tmp_path / "plugin src"
    package = root / "underpaint_krita"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("from .extension import NAME\n")
    (package / "extension.py").write_text("NAME = 'underpaint'\n")
    (package / "__pycache__" / "extension.cpython-311.pyc").write_bytes(b"stale")
    (root / DESKTOP).write_text("[Desktop Entry]\nType=Service\nX-KDE-Library=underpaint_krita\n")
    return root


def test_build_plugin_is_self_contained_and_pure_python(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "pykrita"
    package = build_plugin(dest, source)
    assert package == dest / "underpaint_krita"
    assert (dest / DESKTOP).read_text().startswith("[Desktop Entry]")
    vendor = package / "vendor"
    assert sorted(p.name for p in vendor.iterdir() if p.is_dir()) == ["msgpack", "shared", "websockets"]
    names = [p.name for p in dest.rglob("*")]
    assert not [n for n in names if n.endswith((".so", ".pyd", ".pyc")) or n == "__pycache__"]
    assert (vendor / "shared" / "codec.py").is_file()
    assert (vendor / "websockets" / "sync" / "client.py").is_file()

    # A Python without site-packages (like Krita's) imports everything from vendor/ alone,
    # msgpack through its pure-Python fallback.
    check = f"""
import sys
sys.path.insert(0, {str(vendor)!r})
sys.path.insert(0, {str(dest)!r})
import msgpack, msgpack.fallback, websockets.sync.client, underpaint_krita
from shared import codec, messages
assert msgpack.Packer is msgpack.fallback.Packer
assert all(m.__file__.startswith({str(dest)!r}) for m in (msgpack, websockets, codec, underpaint_krita))
frame = codec.encode(messages.Hello(protocol=1, client="krita"))
print(type(codec.decode_client(frame)).__name__)
"""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Hello"


def test_build_against_the_project_plugin_folder(tmp_path: Path) -> None:
    if not (krita_plugin.DEFAULT_SOURCE / DESKTOP).is_file():
        pytest.skip("plugin/ does not hold the plugin yet")
    package = build_plugin(tmp_path)
    assert (package / "__init__.py").is_file() and (package / "vendor" / "msgpack").is_dir()


def test_incomplete_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match=r"does not hold the plugin \(underpaint_krita\.desktop"):
        build_plugin(tmp_path / "out", tmp_path)


def test_failed_build_keeps_the_installed_plugin(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "pykrita"
    build_plugin(dest, source)
    monkeypatch.setattr(krita_plugin, "VENDORED", ("shared", "no_such_package_here"))
    with pytest.raises(InstallError, match="'no_such_package_here' is not installed"):
        build_plugin(dest, source)
    assert (dest / "underpaint_krita" / "vendor" / "msgpack").is_dir()
    assert sorted(p.name for p in dest.iterdir()) == ["underpaint_krita", DESKTOP]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("", f"[python]\n{KEY}=true\n"),
        ("[General]\na=1", f"[General]\na=1\n\n[python]\n{KEY}=true\n"),
        (
            "[python]\nenable_other=true\n\n[General]\nb=2\n",
            f"[python]\nenable_other=true\n{KEY}=true\n\n[General]\nb=2\n",
        ),
        (f"[python]\n{KEY}=false\n", f"[python]\n{KEY}=true\n"),
        (f"[python]\n{KEY}=true\n{KEY}=false\n", f"[python]\n{KEY}=true\n"),
        ("[python]", f"[python]\n{KEY}=true\n"),
        ("[python]\nx=1", f"[python]\nx=1\n{KEY}=true\n"),
        ("[python]\r\nx=1\r\n", f"[python]\r\nx=1\r\n{KEY}=true\r\n"),
        # The key elsewhere is not Krita's plugin switch.
        (f"[Other]\n{KEY}=true\n", f"[Other]\n{KEY}=true\n\n[python]\n{KEY}=true\n"),
    ],
)
def test_enable_in_kritarc(before: str, after: str) -> None:
    assert with_plugin_enabled(before, True) == after
    assert with_plugin_enabled(after, True) == after


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (f"[python]\n{KEY}=true\nenable_other=true\n", "[python]\nenable_other=true\n"),
        ("[General]\na=1", "[General]\na=1"),
        ("[python]\nx=1", "[python]\nx=1"),
        ("", ""),
    ],
)
def test_disable_in_kritarc(before: str, after: str) -> None:
    assert with_plugin_enabled(before, False) == after


def test_install_update_and_uninstall(source: Path, tmp_path: Path) -> None:
    krita = tmp_path / "krita data"
    kritarc = tmp_path / "config" / "kritarc"
    kritarc.parent.mkdir()
    kritarc.write_bytes(b"[General]\nname=caf\xe9\n[python]\nenable_other=true\n")
    other_plugin = krita / "pykrita" / "other_plugin.desktop"
    other_plugin.parent.mkdir(parents=True)
    other_plugin.write_text("[Desktop Entry]\n")

    package = install_plugin(krita, source=source, kritarc=kritarc)
    assert package == krita / "pykrita" / "underpaint_krita"
    assert is_installed(krita) and is_enabled(kritarc)
    assert (
        kritarc.read_bytes() == b"[General]\nname=caf\xe9\n[python]\nenable_other=true\nenable_underpaint_krita=true\n"
    )

    # An update replaces the plugin's files: a module gone from the source is gone from Krita.
    (source / "underpaint_krita" / "extension.py").write_text("NAME = 'v2'\n")
    (package / "leftover.py").write_text("")
    assert install_plugin(krita / "pykrita", source=source, kritarc=kritarc) == package
    assert (package / "extension.py").read_text() == "NAME = 'v2'\n"
    assert not (package / "leftover.py").exists()
    assert kritarc.read_bytes().count(b"enable_underpaint_krita") == 1

    assert uninstall_plugin(krita, kritarc=kritarc)
    assert not is_installed(krita) and not is_enabled(kritarc)
    assert sorted(p.name for p in (krita / "pykrita").iterdir()) == ["other_plugin.desktop"]
    assert kritarc.read_bytes() == b"[General]\nname=caf\xe9\n[python]\nenable_other=true\n"
    assert not uninstall_plugin(krita, kritarc=kritarc)


def test_command_line(source: Path, tmp_path: Path) -> None:
    env_home = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": "/usr/bin:/bin"}
    krita = tmp_path / "krita"
    command = [sys.executable, "-m", "installer.krita_plugin", "install", "--krita-dir", str(krita)]
    root = Path(krita_plugin.__file__).resolve().parents[1]
    done = subprocess.run([*command, "--source", str(source)], capture_output=True, text=True, cwd=root, env=env_home)
    assert done.returncode == 0, done.stderr
    assert "\nkrita: " in done.stdout  # the Krita found and how the plugin stands with its version
    assert is_installed(krita) and is_enabled(tmp_path / "config" / "kritarc")
    done = subprocess.run(
        [*command, "--source", str(tmp_path / "empty")], capture_output=True, text=True, cwd=root, env=env_home
    )
    assert done.returncode == 1
    assert "does not hold the plugin" in done.stderr and "what to do:" in done.stderr
