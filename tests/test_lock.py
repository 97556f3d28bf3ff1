"""The locks in requirements/ agree with pyproject.toml, with each other, and with the environment
the suite runs in: users get exactly the set that was tested."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from installer.environment import read_lock

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"


def pins(lock: Path) -> dict[str, Version]:
    """name -> pinned version of the lines that apply to this interpreter and system."""
    found = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate():
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{lock.name}: {text} is not an exact pin"
            found[canonicalize_name(requirement.name)] = Version(specifier.version)
    return found


def project_requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return [Requirement(text) for text in listed]


@pytest.mark.parametrize(("lock", "extra"), [("server.lock", None), ("test.lock", "test")])
def test_every_project_requirement_is_pinned_within_its_range(lock: str, extra: str | None) -> None:
    locked = pins(REQUIREMENTS / lock)
    for requirement in project_requirements(extra):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is in pyproject.toml but not in {lock}: run bash tools/lock.sh"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock} pins {name} {locked[name]}, outside pyproject's {requirement}: run bash tools/lock.sh"
        )


def test_the_test_lock_keeps_every_version_of_the_server_lock() -> None:
    server, test = pins(REQUIREMENTS / "server.lock"), pins(REQUIREMENTS / "test.lock")
    assert {name: test.get(name) for name in server} == server


def test_the_installer_reads_the_torch_version_and_the_rest() -> None:
    lock = read_lock(ROOT)
    assert lock.torch_version == str(pins(REQUIREMENTS / "server.lock")["torch"]).split("+")[0]
    assert not any(line.startswith("torch==") for line in lock.others)
    assert any(line.startswith("diffusers==") for line in lock.others)


def test_this_environment_is_the_test_lock() -> None:
    """The suite runs in what tools/test.sh made from the lock, not in whatever was installed."""
    wrong = {}
    for name, version in pins(REQUIREMENTS / "test.lock").items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (str(version), str(installed))
    assert not wrong, f"locked vs installed: {wrong}; run bash tools/test.sh, which installs from the lock"


def excluded() -> set[str]:
    """The packages requirements/excludes.txt leaves out of the locks on purpose."""
    lines = (REQUIREMENTS / "excludes.txt").read_text(encoding="utf-8").splitlines()
    return {canonicalize_name(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def test_pip_check_finds_no_conflict_but_the_excluded_packages() -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    missing = {canonicalize_name(line.split(" requires ")[1].split(",")[0])
               for line in done.stdout.splitlines() if line.endswith("which is not installed.")}
    others = [line for line in done.stdout.splitlines() if not line.endswith("which is not installed.")]
    assert missing <= excluded() and not [line for line in others if line.strip() and "No broken" not in line], (
        done.stdout + done.stderr)


def test_the_excluded_packages_are_not_locked() -> None:
    for lock in ("server.lock", "test.lock"):
        assert not excluded() & set(pins(REQUIREMENTS / lock)), f"{lock} pins a package excludes.txt leaves out"
