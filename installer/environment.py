"""The server's Python environment: a virtual environment with PyTorch and Underpaint in it.

uv is used when it is on PATH (much faster), pip otherwise. Their output is shown as it comes
(PyTorch alone is gigabytes) and, on failure, turned into a hint the user can act on.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import InstallError
from .download import check_space
from .network import probe
from .platforms import venv_script
from .torch_builds import TorchBuild

MIN_PYTHON = (3, 11)
PROJECT = "underpaint"
# Rough size of an environment per PyTorch build, checked before a fresh install starts.
ENVIRONMENT_SIZE = {"cuda": 8 * 10**9, "rocm": 16 * 10**9, "cpu": 2 * 10**9, "mps": 2 * 10**9}

# (text in the tool's output, what the user can do), first match wins.
_HINTS = (
    ("No space left on device", "free some disk space, or install to another disk with --dir"),
    ("ensurepip", "install Python's venv module (Debian/Ubuntu: sudo apt install python3-venv), then retry"),
    ("No module named pip", "this Python has no pip: install it (Debian/Ubuntu: sudo apt install python3-pip) or uv"),
    ("Permission denied", "the install folder is not writable: choose another one with --dir"),
    (
        "No matching distribution found for torch",
        "PyTorch has no {tag} build for this Python and system: use Python 3.11 or 3.12, "
        "another --torch, or name an index with --torch-index",
    ),
    (
        "No solution found when resolving",
        "a package has no build for this Python and system: use Python 3.11 or 3.12",
    ),
    ("Failed to establish a new connection", "no network: connect and retry, or install with --offline DIR"),
    ("Temporary failure in name resolution", "no network: connect and retry, or install with --offline DIR"),
    ("error sending request", "no network: connect and retry, or install with --offline DIR"),
)
_DEFAULT_HINT = "read the messages above, fix the cause, and run the installer again: it continues where it stopped"


def explain_failure(output: str, build: TorchBuild | None = None, offline: bool = False) -> str:
    """A hint for a failed pip/uv/venv run, from its output."""
    if offline and ("No matching distribution" in output or "not found in the package registry" in output):
        return "the offline folder lacks a wheel named above: add it (see docs/install.md) and retry"
    for needle, hint in _HINTS:
        if needle in output:
            return hint.format(tag=build.tag if build else "")
    return _DEFAULT_HINT


@dataclass(frozen=True)
class Installer:
    """How packages get installed into one environment."""

    python: Path
    uv: str | None = None
    offline_dir: Path | None = None
    # With the system's packages visible, the project is built with the system's setuptools too.
    no_build_isolation: bool = False

    def _base(self, action: str) -> list[str]:
        if self.uv:
            return [self.uv, "pip", action, "--python", str(self.python)]
        return [str(self.python), "-m", "pip", action, "--disable-pip-version-check"]

    def install_command(self, requirements: list[str], index_url: str | None = None) -> list[str]:
        command = self._base("install")
        if self.offline_dir is not None:
            command += ["--no-index", "--find-links", str(self.offline_dir)]
        elif index_url:
            command += ["--index-url", index_url]
        if self.no_build_isolation:
            command.append("--no-build-isolation")
        return command + requirements

    def uninstall_command(self, packages: list[str]) -> list[str]:
        return self._base("uninstall") + ([] if self.uv else ["--yes"]) + packages

    def run(self, command: list[str], log: Callable[[str], None], build: TorchBuild) -> None:
        offline = self.offline_dir is not None
        if self.uv:
            run_tool(command, log, build, offline)
        else:
            run_pip(command, build, offline)


def _failure(command: list[str], code: int, output: str, build: TorchBuild | None, offline: bool) -> InstallError:
    return InstallError(
        f"`{' '.join(command[:4])} …` failed (exit status {code})", explain_failure(output, build, offline)
    )


def run_tool(
    command: list[str],
    log: Callable[[str], None],
    build: TorchBuild | None = None,
    offline: bool = False,
) -> None:
    """Run a command, showing its output line by line; on failure raise InstallError with a hint."""
    tail: collections.deque[str] = collections.deque(maxlen=200)
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except OSError as error:
        raise InstallError(f"{command[0]} could not be started: {error}", _DEFAULT_HINT) from error
    assert process.stdout is not None
    with process:
        for line in process.stdout:
            tail.append(line)
            log("    " + line.rstrip())
    if process.returncode:
        raise _failure(command, process.returncode, "".join(tail), build, offline)


def run_pip(command: list[str], build: TorchBuild | None = None, offline: bool = False) -> None:
    """Run pip with the terminal as its output, so its progress bars show while PyTorch's
    gigabytes download; on failure the hint comes from its --log file."""
    with tempfile.TemporaryDirectory() as folder:
        pip_log = Path(folder) / "pip.log"
        code = subprocess.call([*command, "--log", str(pip_log)])
        if code:
            output = pip_log.read_text(encoding="utf-8", errors="replace") if pip_log.exists() else ""
            raise _failure(command, code, output, build, offline)


def python_version(python: Path) -> tuple[int, int] | None:
    try:
        done = subprocess.run(
            [str(python), "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        major, minor = done.stdout.split()
        return int(major), int(minor)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _share_running_environment(python: Path) -> None:
    """`--system-site-packages` only reaches the base interpreter's packages; when the installer
    runs inside a virtual environment, its packages are what the user means, so a .pth adds them."""
    if sys.prefix == sys.base_prefix:
        return
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "_underpaint_installer_env.pth").write_text("\n".join(paths) + "\n", encoding="utf-8")


def ensure_venv(
    venv: Path,
    build: TorchBuild,
    *,
    uv: str | None,
    system_site_packages: bool,
    log: Callable[[str], None],
) -> Path:
    """The environment's Python: the existing one when it works, else a fresh environment.
    A half-created environment is removed so the next run starts clean."""
    python = venv_script(venv, "python")
    version = python_version(python) if python.exists() else None
    if version is not None and version >= MIN_PYTHON:
        log(f"  using the environment in {venv}")
        return python
    if venv.exists():
        if not (venv / "pyvenv.cfg").exists():
            raise InstallError(
                f"{venv} exists and is not a Python environment",
                "choose another install folder with --dir, or move that folder away",
            )
        log(f"  {venv} is broken (its Python does not start or is too old): creating it again")
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    check_space(venv.parent, ENVIRONMENT_SIZE[build.kind])
    if uv:
        command = [uv, "venv", "--python", sys.executable, str(venv)]
    else:
        command = [sys.executable, "-m", "venv", str(venv)]
    if system_site_packages:
        command.append("--system-site-packages")
        if not uv:
            # pip then comes from this Python's packages; venv's own copy would bring an old
            # setuptools (3.11) that hides the system's, which PyTorch needs new.
            command.append("--without-pip")
    try:
        run_tool(command, log)
        if system_site_packages:
            _share_running_environment(python)
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    log(f"  created {venv}")
    return python


LOCK = Path("requirements") / "server.lock"


@dataclass(frozen=True)
class Lock:
    """The project's lock: PyTorch's version (the build depends on the hardware) and every other
    requirement line exactly as tested."""

    torch_version: str
    others: tuple[str, ...]


def read_lock(project: Path) -> Lock:
    path = project / LOCK
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InstallError(f"{path} cannot be read ({error.strerror})", "download Underpaint again") from error
    requirements = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    torch = [line for line in requirements if line.startswith("torch==")]
    if len(torch) != 1:
        raise InstallError(f"{path} does not pin torch exactly once", "download Underpaint again")
    # `torch==2.13.0+cpu ...` -> 2.13.0: the local label names the CPU build the lock was made with.
    version = torch[0].split()[0].removeprefix("torch==").split("+")[0]
    return Lock(version, tuple(line for line in requirements if line not in torch))


def torch_source(build: TorchBuild, offline: bool, log: Callable[[str], None], reach=probe) -> str | None:
    """The index to take PyTorch from: the build's own, or PyPI when that index cannot be reached
    (PyPI's build runs on the CPU too; on Linux it is the CUDA build, on other systems the CPU one)."""
    if offline or build.index_url is None:
        return build.index_url
    found = reach(build.index_url)
    if found.ok:
        return build.index_url
    note = " (on Linux the CUDA build: several GB, and it runs on the CPU too)" if build.kind != "cuda" else ""
    log(f"  PyTorch's index: {found.describe()}; installing PyPI's PyTorch instead{note}")
    return None


def install_server(
    installer: Installer,
    build: TorchBuild,
    project: Path,
    *,
    previous_tag: str | None,
    editable: bool,
    log: Callable[[str], None],
    reach=probe,
) -> None:
    """PyTorch at the locked version from the build's index first (so the lock's `torch` is
    already met by the right build), then the lock's other packages, then Underpaint itself."""
    lock = read_lock(project)
    if previous_tag is not None and previous_tag != build.tag:
        log(f"  replacing PyTorch {previous_tag} with {build.tag}")
        installer.run(installer.uninstall_command(["torch"]), log, build)
    index = torch_source(build, installer.offline_dir is not None, log, reach)
    log(f"  installing PyTorch {lock.torch_version} ({build.tag}) from {index or 'PyPI'}")
    installer.run(installer.install_command([f"torch=={lock.torch_version}"], index), log, build)
    log(f"  installing the locked packages ({len(lock.others)}) from {project / LOCK}")
    with tempfile.TemporaryDirectory() as folder:
        others = Path(folder) / "requirements.txt"
        others.write_text("\n".join(lock.others) + "\n", encoding="utf-8")
        # --no-deps: the lock is complete, and leaves out what requirements/excludes.txt says.
        installer.run(installer.install_command(["--no-deps", "-r", str(others)]), log, build)
    log(f"  installing Underpaint from {project}")
    target = ["--no-deps", "--editable", str(project)] if editable else ["--no-deps", str(project)]
    if installer.uv:
        # uv reuses a build of a local project unless told to rebuild; pip always rebuilds it.
        target = ["--reinstall-package", PROJECT, *target]
    installer.run(installer.install_command(target), log, build)
