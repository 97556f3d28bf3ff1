"""The Krita plugin, assembled into Krita's `pykrita` folder and enabled in `kritarc`.

Krita runs plugins in its own Python, which has none of our dependencies, so the plugin
carries them in `underpaint_krita/vendor/`: our `shared` package and the pure-Python parts of
`msgpack` and `websockets`, copied from the Python that runs this (compiled modules removed:
they were built for another interpreter, and both packages fall back to Python code).

`underpaint install-plugin` and `python -m installer.krita_plugin` call `install_plugin`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from shared.paths import krita_data_dir, kritarc_path

from . import InstallError
from .krita_version import find_krita, krita_lines

PLUGIN_NAME = "underpaint_krita"
DESKTOP = f"{PLUGIN_NAME}.desktop"
ENABLE_KEY = f"enable_{PLUGIN_NAME}"
SECTION = "[python]"
VENDORED = ("shared", "msgpack", "websockets")
DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "plugin"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.pyd")
_HEADER = re.compile(r"^\s*\[.*\]\s*$")
_LINES = re.compile(r"[^\n]*\n|[^\n]+$")


def pykrita_dir(platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Krita's folder of Python plugins for this user."""
    return krita_data_dir(platform, env, home) / "pykrita"


def _plugins_root(krita_dir: Path | None) -> Path:
    """`--krita-dir` may name Krita's resource folder or its `pykrita` folder itself."""
    if krita_dir is None:
        return pykrita_dir()
    return krita_dir if krita_dir.name == "pykrita" else krita_dir / "pykrita"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InstallError(
            f"the package {name!r} is not installed in {sys.executable}, so the plugin cannot carry it",
            "run `underpaint install-plugin` from the Underpaint environment, or install the server first",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _copy_licenses(name: str, vendor: Path) -> None:
    try:
        files = importlib.metadata.distribution(name).files or []
    except importlib.metadata.PackageNotFoundError:
        return
    for file in files:
        if file.name.upper().startswith(("LICENSE", "COPYING")):
            shutil.copy2(Path(file.locate()), vendor / f"{name}-{file.name}")


def build_plugin(dest: Path, source: Path | None = None) -> Path:
    """Assemble the self-contained plugin in `dest` (`underpaint_krita.desktop` and
    `underpaint_krita/` with `vendor/`), replacing an older copy; returns the package folder.

    The new copy is built beside the old one and swapped in at the end, so a failed build
    leaves a working plugin in place.
    """
    source = source or DEFAULT_SOURCE
    if not (source / DESKTOP).is_file() or not (source / PLUGIN_NAME / "__init__.py").is_file():
        raise InstallError(
            f"{source} does not hold the plugin ({DESKTOP} and {PLUGIN_NAME}/__init__.py)",
            "run the installer from a complete copy of Underpaint",
        )
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".{PLUGIN_NAME}.new"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source / PLUGIN_NAME, staging, ignore=_SKIP)
        vendor = staging / "vendor"
        shutil.rmtree(vendor, ignore_errors=True)
        vendor.mkdir()
        for name in VENDORED:
            shutil.copytree(_package_dir(name), vendor / name, ignore=_SKIP)
            _copy_licenses(name, vendor)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    package = dest / PLUGIN_NAME
    shutil.rmtree(package, ignore_errors=True)
    staging.rename(package)
    shutil.copy2(source / DESKTOP, dest / DESKTOP)
    return package


def _key(line: str) -> str:
    return line.split("=", 1)[0].strip()


def with_plugin_enabled(text: str, enabled: bool) -> str:
    """kritarc text with the plugin enabled (or its key removed); every other byte unchanged."""
    newline = "\r\n" if "\r\n" in text else "\n"
    wanted = f"{ENABLE_KEY}=true"
    lines = _LINES.findall(text)  # each line keeps its own ending
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        if not enabled:
            return text
        prefix = text if not text or text.endswith("\n") else text + newline
        blank = newline if prefix.strip() else ""
        return f"{prefix}{blank}{SECTION}{newline}{wanted}{newline}"
    end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    section = lines[start + 1 : end]
    body = [line for line in section if _key(line) != ENABLE_KEY]
    if enabled:
        if [line.strip() for line in section if _key(line) == ENABLE_KEY] == [wanted]:
            return text
        # After the section's last setting, before the blank lines that separate sections.
        last = max((i + 1 for i, line in enumerate(body) if line.strip()), default=0)
        if last and not body[last - 1].endswith("\n"):
            body[last - 1] += newline
        elif not last and not lines[start].endswith("\n"):
            lines[start] += newline
        body.insert(last, wanted + newline)
    elif body == section:
        return text
    lines[start + 1 : end] = body
    return "".join(lines)


def _read(kritarc: Path) -> str:
    # surrogateescape: bytes that are not UTF-8 are written back exactly as they were read.
    return kritarc.read_text(encoding="utf-8", errors="surrogateescape") if kritarc.exists() else ""


def _set_enabled(kritarc: Path, enabled: bool) -> None:
    text = _read(kritarc)
    updated = with_plugin_enabled(text, enabled)
    if updated != text:
        kritarc.parent.mkdir(parents=True, exist_ok=True)
        kritarc.write_text(updated, encoding="utf-8", errors="surrogateescape", newline="")


def is_enabled(kritarc: Path | None = None) -> bool:
    """Whether kritarc enables the plugin (enabling it again would change nothing)."""
    text = _read(kritarc or kritarc_path())
    return bool(text) and with_plugin_enabled(text, True) == text


def install_plugin(krita_dir: Path | None = None, *, source: Path | None = None, kritarc: Path | None = None) -> Path:
    """Build the plugin into Krita's `pykrita` folder and enable it; returns the package folder.
    Running it again updates the plugin and leaves kritarc as it is."""
    package = build_plugin(_plugins_root(krita_dir), source)
    _set_enabled(kritarc or kritarc_path(), True)
    return package


def is_installed(krita_dir: Path | None = None) -> bool:
    root = _plugins_root(krita_dir)
    return (root / DESKTOP).is_file() and (root / PLUGIN_NAME / "__init__.py").is_file()


def uninstall_plugin(krita_dir: Path | None = None, *, kritarc: Path | None = None) -> bool:
    """Remove the plugin and its kritarc key; returns whether a plugin was there."""
    root = _plugins_root(krita_dir)
    found = (root / PLUGIN_NAME).exists() or (root / DESKTOP).exists()
    shutil.rmtree(root / PLUGIN_NAME, ignore_errors=True)
    (root / DESKTOP).unlink(missing_ok=True)
    _set_enabled(kritarc or kritarc_path(), False)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m installer.krita_plugin", description="Install or remove the Krita plugin."
    )
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--krita-dir", type=Path, help="Krita's resource folder or its pykrita folder")
    parser.add_argument("--source", type=Path, help="the plugin's source folder (default: the project's)")
    args = parser.parse_args(argv)
    try:
        if args.action == "install":
            print(f"Krita plugin installed in {install_plugin(args.krita_dir, source=args.source)}")
            print("\n".join(krita_lines(find_krita())))
            print("Restart Krita to load it.")
        elif uninstall_plugin(args.krita_dir):
            print("Krita plugin removed.")
        else:
            print("The Krita plugin was not installed.")
    except InstallError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
