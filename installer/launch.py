"""What the `underpaint` launcher runs inside the server's environment: the models folders the
installer set up (in `UNDERPAINT_MODELS`) become `--models` options of the commands that take them,
ahead of any the user gives."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

MODELS_VARIABLE = "UNDERPAINT_MODELS"
COMMANDS_WITH_MODELS = ("serve", "doctor")


def with_models(argv: Sequence[str], folders: Sequence[str]) -> list[str]:
    if not argv or argv[0] not in COMMANDS_WITH_MODELS:
        return list(argv)
    options = [part for folder in folders for part in ("--models", folder)]
    return [argv[0], *options, *argv[1:]]


def main() -> None:
    from server.cli import main as cli_main

    folders = [folder for folder in os.environ.get(MODELS_VARIABLE, "").split(os.pathsep) if folder]
    cli_main(with_models(sys.argv[1:], folders))


if __name__ == "__main__":
    main()
