"""The `underpaint` command, run by the launcher inside the server's environment.

It holds the server's commands (`serve`, `generate`) and the ones that look after this install
(`doctor`, `install-plugin`, `models download`). The models folders the installer set up (in
`UNDERPAINT_MODELS`) become `--models` options of the commands that take them, ahead of any the
user gives.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shared import DEFAULT_PORT
from shared.paths import data_dir

MODELS_VARIABLE = "UNDERPAINT_MODELS"
COMMANDS_WITH_MODELS = ("serve", "doctor")


def with_models(argv: Sequence[str], folders: Sequence[str]) -> list[str]:
    if not argv or argv[0] not in COMMANDS_WITH_MODELS:
        return list(argv)
    options = [part for folder in folders for part in ("--models", folder)]
    return [argv[0], *options, *argv[1:]]


def _install_plugin(args: argparse.Namespace) -> int:
    from . import InstallError
    from .krita_plugin import install_plugin
    from .krita_version import find_krita, krita_lines

    try:
        path = install_plugin(args.krita_dir)
    except InstallError as exc:
        print(f"underpaint install-plugin: {exc}", file=sys.stderr)
        return 1
    print("\n".join(krita_lines(find_krita())))
    print(f"Krita plugin installed in {path}; restart Krita and open Settings > Dockers > Underpaint")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import report

    for line in report(args.models, args.port):
        print(line)
    return 0


def _models_download(args: argparse.Namespace) -> int:
    from .models import install_models, load_manifest, report_failures
    from .state import InstallState

    root = args.dir or data_dir()
    state = InstallState.load(root)
    if state.models_dir is None:
        print(f"underpaint models download: no install in {root}; run `python installer/install.py` first",
              file=sys.stderr)
        return 1
    models_dir = Path(state.models_dir)
    print(f"Models ({', '.join(state.model_sets)}) into {models_dir}")
    files = (load_manifest(args.manifest) if args.manifest else load_manifest()).select(state.model_sets)
    failures = install_models(files, models_dir, verify=args.verify)
    report_failures(failures, files, models_dir)
    return 1 if failures else 0


def parser() -> argparse.ArgumentParser:
    from server.cli import add_commands

    top = argparse.ArgumentParser(prog="underpaint", description="AI image generation inside Krita")
    commands = top.add_subparsers(dest="command", required=True)
    add_commands(commands)
    plugin = commands.add_parser("install-plugin", help="install the Krita plugin")
    plugin.add_argument("--krita-dir", type=Path, help="Krita's resource folder (default: the platform's)")
    plugin.set_defaults(handler=_install_plugin)
    doctor = commands.add_parser("doctor", help="check this machine's set-up")
    doctor.add_argument("--models", type=Path, action="append", default=[])
    doctor.add_argument("--port", type=int, default=DEFAULT_PORT)
    doctor.set_defaults(handler=_doctor)
    models = commands.add_parser("models", help="the model files of this install")
    actions = models.add_subparsers(dest="action", required=True)
    download = actions.add_parser(
        "download", help="download the model sets chosen at install time that are missing (resumes)"
    )
    download.add_argument("--dir", type=Path, help=f"the install folder (default: {data_dir()})")
    download.add_argument("--verify", action="store_true", help="re-hash files and download bad ones again")
    download.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    download.set_defaults(handler=_models_download)
    return top


def main(argv: Sequence[str] | None = None) -> None:
    folders = [folder for folder in os.environ.get(MODELS_VARIABLE, "").split(os.pathsep) if folder]
    args = parser().parse_args(with_models(sys.argv[1:] if argv is None else argv, folders))
    sys.exit(args.handler(args) or 0)


if __name__ == "__main__":
    main()
