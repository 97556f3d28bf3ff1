"""Folders per operating system, accelerator detection output, and the PyTorch build chosen."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer import InstallError
from installer.krita_plugin import pykrita_dir
from installer.platforms import launcher_dir, venv_script
from installer.torch_builds import Accelerator, choose_torch, parse_nvidia_smi, parse_rocminfo
from shared.paths import data_dir, kritarc_path

HOME = Path("/home/ana")
WIN_ENV = {"LOCALAPPDATA": r"C:\Users\ana\AppData\Local", "APPDATA": r"C:\Users\ana\AppData\Roaming"}


@pytest.mark.parametrize(
    ("platform", "env", "data", "pykrita", "kritarc"),
    [
        (
            "linux",
            {},
            "/home/ana/.local/share/underpaint",
            "/home/ana/.local/share/krita/pykrita",
            "/home/ana/.config/kritarc",
        ),
        (
            "linux",
            {"XDG_DATA_HOME": "/data", "XDG_CONFIG_HOME": "/conf"},
            "/data/underpaint",
            "/data/krita/pykrita",
            "/conf/kritarc",
        ),
        # Relative XDG values are invalid by the spec and ignored.
        (
            "linux",
            {"XDG_DATA_HOME": "rel"},
            "/home/ana/.local/share/underpaint",
            "/home/ana/.local/share/krita/pykrita",
            "/home/ana/.config/kritarc",
        ),
        (
            "macos",
            {"XDG_DATA_HOME": "/ignored"},
            "/home/ana/Library/Application Support/underpaint",
            "/home/ana/Library/Application Support/krita/pykrita",
            "/home/ana/Library/Preferences/kritarc",
        ),
        (
            "windows",
            WIN_ENV,
            r"C:\Users\ana\AppData\Local/underpaint",
            r"C:\Users\ana\AppData\Roaming/krita/pykrita",
            r"C:\Users\ana\AppData\Local/kritarc",
        ),
        (
            "windows",
            {},
            "/home/ana/AppData/Local/underpaint",
            "/home/ana/AppData/Roaming/krita/pykrita",
            "/home/ana/AppData/Local/kritarc",
        ),
    ],
)
def test_folders_per_platform(platform: str, env: dict, data: str, pykrita: str, kritarc: str) -> None:
    assert data_dir(platform, env, HOME) == Path(data)
    assert pykrita_dir(platform, env, HOME) == Path(pykrita)
    assert kritarc_path(platform, env, HOME) == Path(kritarc)


def test_unknown_platform_is_named() -> None:
    with pytest.raises(ValueError, match="'beos'"):
        data_dir("beos", {}, HOME)


def test_launcher_and_venv_paths() -> None:
    assert launcher_dir(Path("/opt/up"), "linux", {}, HOME) == HOME / ".local" / "bin"
    assert launcher_dir(Path("/opt/up"), "windows", {}, HOME) == Path("/opt/up")
    assert venv_script(Path("/v"), "python", "windows") == Path("/v/Scripts/python.exe")
    assert venv_script(Path("/v"), "python", "macos") == Path("/v/bin/python")


def test_parse_nvidia_smi() -> None:
    text = "NVIDIA GeForce RTX 3060, 8.6, 550.54.14\nTesla P100-PCIE-16GB, 6.0, 535.1\n\n"
    assert parse_nvidia_smi(text) == [
        Accelerator("nvidia", "NVIDIA GeForce RTX 3060", (8, 6), "550.54.14"),
        Accelerator("nvidia", "Tesla P100-PCIE-16GB", (6, 0), "535.1"),
    ]
    # Drivers older than 510 answer the query without compute_cap.
    assert parse_nvidia_smi("GeForce GTX 1080, 470.182.03") == [
        Accelerator("nvidia", "GeForce GTX 1080", None, "470.182.03")
    ]


def test_parse_rocminfo() -> None:
    text = """
Agent 1
  Name:                    AMD Ryzen 9 7950X
Agent 2
  Name:                    gfx1100
  Marketing Name:          AMD Radeon RX 7900 XTX
Agent 3
  Name:                    gfx1100
"""
    assert parse_rocminfo(text) == ["gfx1100"]


def nvidia(cap: tuple[int, int] | None, driver: str = "560.35") -> Accelerator:
    return Accelerator("nvidia", "GPU", cap, driver)


NONE = Accelerator("none")
INDEX = "https://download.pytorch.org/whl"


@pytest.mark.parametrize(
    ("platform", "accel", "requested", "tag", "index", "noted"),
    [
        ("linux", nvidia((8, 6), "575.1"), "auto", "cu128", f"{INDEX}/cu128", False),
        # A driver too old for CUDA 12.8 builds falls back to 12.6 for cards those builds support.
        ("windows", nvidia((8, 6), "560.94"), "auto", "cu126", f"{INDEX}/cu126", False),
        ("linux", nvidia((6, 1), "575.1"), "auto", "cu126", f"{INDEX}/cu126", False),
        ("linux", nvidia((7, 0)), "auto", "cu126", f"{INDEX}/cu126", False),
        # Blackwell needs CUDA 12.8: keep it and tell the user to update the driver.
        ("linux", nvidia((12, 0), "560.1"), "auto", "cu128", f"{INDEX}/cu128", True),
        ("linux", nvidia((8, 9), "470.1"), "auto", "cu126", f"{INDEX}/cu126", True),
        ("linux", nvidia(None, "575.1"), "auto", "cu128", f"{INDEX}/cu128", False),
        ("linux", nvidia((8, 6), "575.1"), "cpu", "cpu", f"{INDEX}/cpu", False),
        ("linux", NONE, "cuda", "cu128", f"{INDEX}/cu128", False),
        ("linux", NONE, "auto", "cpu", f"{INDEX}/cpu", False),
        ("windows", NONE, "auto", "cpu", f"{INDEX}/cpu", False),
        ("macos", NONE, "auto", "cpu", None, False),
        ("macos", Accelerator("apple", "Apple Silicon"), "auto", "mps", None, False),
        ("linux", Accelerator("amd", "gfx1100"), "auto", "rocm6.4", f"{INDEX}/rocm6.4", False),
        ("linux", NONE, "rocm", "rocm6.4", f"{INDEX}/rocm6.4", False),
        ("windows", Accelerator("amd", "gfx1100"), "auto", "cpu", f"{INDEX}/cpu", True),
    ],
)
def test_choose_torch(
    platform: str, accel: Accelerator, requested: str, tag: str, index: str | None, noted: bool
) -> None:
    build = choose_torch(platform, accel, requested)
    assert (build.tag, build.index_url, bool(build.notes)) == (tag, index, noted)


@pytest.mark.parametrize(
    ("platform", "accel", "requested", "message"),
    [
        ("macos", NONE, "cuda", "CUDA is not available on macOS"),
        ("windows", NONE, "rocm", "ROCm builds for Linux only"),
        ("linux", NONE, "mps", "Apple Silicon"),
        ("linux", nvidia((3, 5)), "auto", r"compute capability 3\.5\) is too old"),
        ("linux", NONE, "directml", "--torch must be one of"),
    ],
)
def test_impossible_choices_say_what_to_do(platform: str, accel: Accelerator, requested: str, message: str) -> None:
    with pytest.raises(InstallError, match=message) as caught:
        choose_torch(platform, accel, requested)
    assert caught.value.hint
