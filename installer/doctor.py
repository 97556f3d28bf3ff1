"""`underpaint doctor`: what this machine offers the server, one line per fact, with the fix
when something is missing."""

from __future__ import annotations

import platform as platform_module
import shutil
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from shared.paths import kritarc_path

from .krita_plugin import is_enabled, is_installed, pykrita_dir
from .krita_version import KritaInstall, find_krita, krita_lines

Scan = Callable[[list[Path]], Iterable[Any]]


def _torch_lines() -> list[str]:
    try:
        import torch
    except ImportError as error:
        return [f"torch: cannot be imported ({error}); run the installer again to repair the environment"]
    lines = [f"torch: {torch.__version__}"]
    if torch.cuda.is_available():
        backend = f"ROCm {torch.version.hip}" if torch.version.hip else f"CUDA {torch.version.cuda}"
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            memory = props.total_memory / 2**30
            lines.append(f"device: cuda:{index} {props.name}, {memory:.1f} GiB ({backend})")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        lines.append("device: mps (Apple GPU)")
    else:
        lines.append("device: cpu only: generating will be slow")
        if shutil.which("nvidia-smi"):
            lines.append(
                "  an NVIDIA GPU is present but this PyTorch cannot use it: run the installer again with --torch cuda"
            )
    return lines


def _plugin_lines() -> list[str]:
    folder = pykrita_dir()
    if not is_installed(folder):
        return [f"krita plugin: not installed in {folder}; run `underpaint install-plugin`"]
    kritarc = kritarc_path()
    if not is_enabled(kritarc):
        return [
            f"krita plugin: installed in {folder} but not enabled in {kritarc}; "
            "run `underpaint install-plugin` with Krita closed"
        ]
    return [f"krita plugin: installed in {folder} and enabled"]


def _port_line(port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return (
                f"port {port}: in use (a server may be running already; "
                "otherwise choose another with `underpaint serve --port N`)"
            )
    return f"port {port}: free"


def _registry_scan(folders: list[Path]) -> Iterable[Any]:
    # Imported here: the registry needs the server's dependencies, the rest of the report does not.
    from server.models.registry import Registry

    registry = Registry(folders)
    registry.scan()
    return registry.entries()


def _model_lines(models_dirs: Sequence[Path], scan: Scan) -> list[str]:
    lines = [f"models folder: {folder}" + ("" if folder.is_dir() else " (missing)") for folder in models_dirs]
    if not models_dirs:
        lines.append("models folder: none given (pass --models DIR)")
    try:
        entries = list(scan(list(models_dirs)))
    except Exception as error:  # the report goes on: it is what the user runs when things fail
        return [*lines, f"models: cannot be scanned ({type(error).__name__}: {error})"]
    for entry in entries:
        what = " ".join(str(part) for part in (entry.family, entry.kind, entry.variant) if part)
        demo = " (built-in demo)" if getattr(entry, "embedded", False) else ""
        if entry.refused:
            lines.append(f"refused: {entry.name} ({what}): {entry.refused}")
        else:
            lines.append(f"model: {entry.name} ({what}){demo}")
    if not any(entry.kind == "checkpoint" and not entry.refused for entry in entries):
        lines.append("no usable checkpoint: download one with `python installer/install.py --model-set minimal`")
    return lines


def report(models_dirs: Sequence[Path], port: int, scan: Scan | None = None,
           krita: Callable[[], list[KritaInstall]] = find_krita) -> list[str]:
    """The report's lines. `scan(folders)` lists model entries (with name, kind, family, variant,
    refused); by default the server's registry does it. `krita()` finds the installed Krita."""
    return [
        f"python: {platform_module.python_version()} ({sys.executable})",
        f"system: {platform_module.platform()}",
        *_torch_lines(),
        *krita_lines(krita()),
        *_plugin_lines(),
        _port_line(port),
        *_model_lines(models_dirs, scan or _registry_scan),
    ]
