"""Install Underpaint: `python installer/install.py [options]` (see docs/install.md).

Standard library only. Every step is safe to repeat: a re-run repairs and updates.
"""

# This file must still parse on old Pythons, so that they get the message below.
import sys

MIN_PYTHON = (3, 11)
if sys.version_info < MIN_PYTHON:
    version = ".".join(map(str, sys.version_info[:3]))
    sys.exit(
        f"error: Underpaint needs Python 3.11 or newer; this is Python {version} ({sys.executable}).\n"
        "  what to do: install Python 3.11+ (python.org, or `sudo apt install python3.11 python3.11-venv`) "
        "and run the installer with it, e.g. `python3.11 installer/install.py`."
    )

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    # Run as a script: import the installer as a package, not its modules from this folder.
    sys.path[0] = str(PROJECT_ROOT)

from installer import InstallError  # noqa: E402
from installer.environment import Installer, ensure_venv, install_server, run_tool  # noqa: E402
from installer.krita_plugin import uninstall_plugin  # noqa: E402
from installer.launcher import remove_launcher, write_launcher  # noqa: E402
from installer.models import (  # noqa: E402
    MANIFEST,
    install_models,
    load_manifest,
    purge_downloads,
    report_failures,
)
from installer.platforms import launcher_dir  # noqa: E402
from installer.state import STATE_NAME, InstallState  # noqa: E402
from installer.torch_builds import (  # noqa: E402
    TORCH_KINDS,
    Accelerator,
    TorchBuild,
    choose_torch,
    detect_accelerator,
)
from shared.paths import current_platform, data_dir  # noqa: E402

PLUGIN_SOURCE = PROJECT_ROOT / "plugin"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python installer/install.py",
        description="Install Underpaint: the server's environment, models, the Krita plugin and a launcher. "
        "Run it again to repair or update.",
    )
    parser.add_argument("--dir", type=Path, help=f"install folder (default: {data_dir()})")
    parser.add_argument(
        "--torch", choices=("auto", *TORCH_KINDS), help="PyTorch build (default: detected, or as last time)"
    )
    parser.add_argument("--torch-index", metavar="URL", help="package index for PyTorch (overrides --torch's)")
    parser.add_argument(
        "--model-set",
        action="append",
        metavar="NAME",
        help="models to download: minimal (default), sdxl, photo, sdxl-photo, embeddings, control, annotators, "
        "reference, none; repeatable (default: as last time)",
    )
    parser.add_argument(
        "--models",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="an existing models folder to use as well (A1111, ComfyUI); repeatable",
    )
    parser.add_argument("--models-dir", type=Path, metavar="DIR", help="where downloads go (default: DIR/models)")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help=argparse.SUPPRESS)
    parser.add_argument("--krita-dir", type=Path, metavar="DIR", help="Krita's resource or pykrita folder")
    parser.add_argument("--plugin-source", type=Path, default=PLUGIN_SOURCE, help=argparse.SUPPRESS)
    parser.add_argument("--no-plugin", action="store_true", help="do not install the Krita plugin")
    parser.add_argument("--bin-dir", type=Path, metavar="DIR", help="where the `underpaint` launcher goes")
    parser.add_argument("--offline", type=Path, metavar="DIR", help="install from a folder of wheels and models")
    parser.add_argument(
        "--system-site-packages",
        action="store_true",
        help="let the environment use packages installed in this Python (CI, or an existing PyTorch)",
    )
    parser.add_argument("--editable", action="store_true", help="install the project editable (development)")
    parser.add_argument("--verify", action="store_true", help="re-hash model files and download bad ones again")
    parser.add_argument("--uninstall", action="store_true", help="remove the environment, plugin and launcher")
    parser.add_argument("--purge-models", action="store_true", help="with --uninstall: also delete downloads")
    args = parser.parse_args(argv)
    if args.purge_models and not args.uninstall:
        parser.error("--purge-models only goes with --uninstall")
    if args.offline is not None and not args.offline.is_dir():
        parser.error(f"--offline {args.offline}: no such folder")
    for folder in args.models:
        if not folder.is_dir():
            parser.error(f"--models {folder}: no such folder")
    return args


def log(message: str) -> None:
    print(message, flush=True)


def _pick_torch(args: argparse.Namespace, requested: str, platform: str) -> TorchBuild:
    accel = Accelerator("none") if requested == "cpu" else detect_accelerator(platform)
    if accel.kind != "none":
        log(f"  found {accel.kind} {accel.name}".rstrip())
    build = choose_torch(platform, accel, requested)
    if args.torch_index:
        build = dataclasses.replace(build, index_url=args.torch_index)
    for note in build.notes:
        log(f"  note: {note}")
    log(f"  using {build.describe()}")
    return build


def install(args: argparse.Namespace) -> None:
    platform = current_platform()
    root = (args.dir or data_dir()).absolute()
    state = InstallState.load(root)
    models_dir = (args.models_dir or (Path(state.models_dir) if state.models_dir else root / "models")).absolute()
    state.model_sets = args.model_set or state.model_sets
    state.torch_request = args.torch or state.torch_request
    files = load_manifest(args.manifest).select(state.model_sets)
    uv = shutil.which("uv")

    log("1. Hardware")
    build = _pick_torch(args, state.torch_request, platform)

    log(f"2. Server environment ({'uv' if uv else 'pip'})")
    venv = root / "venv"
    python = ensure_venv(venv, build, uv=uv, system_site_packages=args.system_site_packages, log=log)
    installer = Installer(python, uv, args.offline, no_build_isolation=args.system_site_packages)
    install_server(installer, build, PROJECT_ROOT, previous_tag=state.torch, editable=args.editable, log=log)
    state.torch = build.tag
    state.models_dir = str(models_dir)
    state.save(root)

    log("3. Krita plugin")
    if args.no_plugin:
        log("  skipped (--no-plugin)")
    else:
        krita_dir = args.krita_dir or (Path(state.krita_dir) if state.krita_dir else None)
        # The environment's Python builds it: the plugin carries msgpack and websockets from there.
        command = [str(python), "-m", "installer.krita_plugin", "install", "--source", str(args.plugin_source)]
        run_tool(command + (["--krita-dir", str(krita_dir)] if krita_dir else []), log)
        state.krita_dir = str(krita_dir.absolute()) if krita_dir else None
        state.save(root)

    log("4. Launcher")
    registered = list(dict.fromkeys([*state.registered_models, *(str(d.absolute()) for d in args.models)]))
    launcher = write_launcher(
        args.bin_dir or launcher_dir(root, platform),
        platform,
        python,
        [models_dir, *map(Path, registered)],
    )
    if state.launcher and Path(state.launcher) != launcher:
        remove_launcher(Path(state.launcher))
    state.registered_models, state.launcher = registered, str(launcher)
    state.save(root)
    log(f"  {launcher}")

    log(f"5. Models into {models_dir}")
    if not files:
        log("  none requested")
    models_dir.mkdir(parents=True, exist_ok=True)
    failures = install_models(files, models_dir, verify=args.verify, offline_dir=args.offline, log=log)
    report_failures(failures, files, models_dir, log)

    on_path = launcher.parent in (Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p)
    start = "underpaint serve" if on_path else f'"{launcher}" serve'
    log(f"\nUnderpaint is installed. Start the server with:  {start}")
    if not args.no_plugin:
        log("Then restart Krita: the Underpaint docker is under Settings > Dockers.")


def uninstall(args: argparse.Namespace) -> None:
    root = (args.dir or data_dir()).absolute()
    state = InstallState.load(root)
    krita_dir = args.krita_dir or (Path(state.krita_dir) if state.krita_dir else None)
    log("Krita plugin: " + ("removed" if uninstall_plugin(krita_dir) else "not installed"))
    if state.launcher and remove_launcher(Path(state.launcher)):
        log(f"launcher: removed {state.launcher}")
    if (root / "venv").exists():
        shutil.rmtree(root / "venv")
        log(f"environment: removed {root / 'venv'}")
    models_dir = Path(state.models_dir) if state.models_dir else root / "models"
    if args.purge_models:
        # Only the installer's own downloads: registered folders belong to other programs.
        log(f"models: removed {purge_downloads(models_dir)} downloaded files from {models_dir}")
    elif models_dir.exists():
        log(f"models: kept in {models_dir} (delete them with --uninstall --purge-models)")
    (root / STATE_NAME).unlink(missing_ok=True)
    if root.exists() and not any(root.iterdir()):
        root.rmdir()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.uninstall:
            uninstall(args)
        else:
            install(args)
    except InstallError as error:
        log(f"\nerror: {error}")
        return 1
    except KeyboardInterrupt:
        log("\ninterrupted: run the installer again to continue (downloads resume where they stopped)")
        return 130
    except OSError as error:
        log(f"\nerror: {error}\n  what to do: check that the folder is writable and has free space, then retry")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
