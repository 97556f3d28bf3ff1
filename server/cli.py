"""The server's commands: `underpaint serve` and `underpaint generate` (`python -m server ...`).

The `underpaint` command itself (installer.launch) adds the commands that look after an install.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import sys
import typing
import uuid
from pathlib import Path

import PIL.Image

from shared import DEFAULT_PORT
from shared.messages import FillMode, ModelDefaults, ModelInfo
from shared.paths import data_dir

# A token on the command line is visible to every user of the machine (`ps`); from the environment or a
# file it is not.
TOKEN_VARIABLE = "UNDERPAINT_TOKEN"
IN_PS = f"visible to other users in `ps`: prefer --token-file or the {TOKEN_VARIABLE} environment variable"


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `serve` and `generate` to a command line; each sets `handler` to the function it runs."""
    serve = commands.add_parser("serve", help="run the diffusion server")
    _serve_parser(serve)
    serve.set_defaults(handler=_serve)
    generate = commands.add_parser("generate", help="generate an image through a running server")
    _generate_parser(generate)
    generate.set_defaults(handler=_generate)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description="Underpaint's diffusion server")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    sys.exit(args.handler(args) or 0)


def _serve_parser(p: argparse.ArgumentParser) -> None:
    from .config import ServerConfig

    p.add_argument("--models", type=Path, action="append", default=[],
                   help="a models folder (repeatable); A1111 and ComfyUI folders work as they are")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "fp16", "bf16", "fp32"])
    p.add_argument("--outputs", type=Path, default=data_dir() / "outputs",
                   help="where results are saved (default: %(default)s)")
    _token_options(p, f"required of clients, mandatory when --host is not loopback ({IN_PS})")
    p.add_argument("--max-message", type=int, default=256 * 1024 * 1024, help="largest frame in bytes")
    p.add_argument("--cache-size", type=int, default=1, help="models kept loaded at once")
    p.add_argument("--max-connections", type=int, default=ServerConfig.max_connections,
                   help="websocket connections open at once; more are refused with 'busy'")
    for flag, what, share in (("--queue-budget", "the inputs (images, prompts) of queued and running jobs", "1/8"),
                              ("--connection-queue-budget", "the same, for one connection", "1/16"),
                              ("--receive-budget", "messages still arriving or being decoded", "1/16")):
        p.add_argument(flag, type=int, metavar="MIB",
                       help=f"MiB that {what} may hold; more is refused with 'busy' (default: {share} of this "
                            "machine's memory)")
    p.add_argument("--allow-origin", action="append", default=[],
                   help="a browser origin allowed to connect (default: none)")
    p.add_argument("--log-file", type=Path,
                   help="one JSON line per job (no prompts); rotates at 10 MiB, keeping 5 old files")


def _token_options(p: argparse.ArgumentParser, help: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--token", help=help)
    group.add_argument("--token-file", type=Path, help="a file holding the access token (its first line)")


class _TokenError(Exception):
    pass


def _token(args: argparse.Namespace) -> str | None:
    """The token from --token, --token-file or the environment, in that order."""
    if args.token is not None:
        return args.token
    if args.token_file is not None:
        try:
            lines = args.token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _TokenError(f"--token-file {args.token_file}: cannot be read ({exc})") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise _TokenError(f"--token-file {args.token_file}: its first line is empty")
        return token
    return os.environ.get(TOKEN_VARIABLE) or None


def _serve(args: argparse.Namespace) -> int:
    from . import logs

    try:
        token = _token(args)
    except _TokenError as exc:
        print(f"underpaint serve: {exc}", file=sys.stderr)
        return 2
    logs.configure()
    from shared.messages import Limits

    from .config import MIB, ServerConfig
    from .net.server import Server

    budgets = {name: value * MIB for name in ("queue_budget", "connection_queue_budget", "receive_budget")
               if (value := getattr(args, name)) is not None}
    config = ServerConfig(
        models=args.models or _default_models(), host=args.host, port=args.port, device=args.device, dtype=args.dtype,
        outputs=args.outputs, token=token, limits=Limits(max_message=args.max_message),
        cache_size=args.cache_size, allowed_origins=tuple(args.allow_origin), log_file=args.log_file,
        max_connections=args.max_connections, **budgets,
    )
    try:
        server = Server(config)
    except ValueError as exc:
        print(f"underpaint serve: {exc}", file=sys.stderr)
        return 2
    _announce_models(server)
    print(f"Results are saved in {config.outputs}", file=sys.stderr)
    try:
        asyncio.run(server.run())
    except OSError as exc:
        print(f"underpaint serve: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    if server.queue.worker_busy:
        # The worker is inside one operation of a native library (every client has been told its job was
        # cancelled, the job log is closed): exiting normally would wait for it, and tearing down the
        # library under it aborts the process.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _default_models() -> list[Path]:
    """The installer's models folder, when the user names none."""
    folder = data_dir() / "models"
    return [folder] if folder.is_dir() else []


def _announce_models(server) -> None:
    checkpoints = server.registry.checkpoints()
    for entry in server.registry.entries():
        if entry.refused:
            print(f"  refused {entry.name}: {entry.refused}", file=sys.stderr)
    if not checkpoints:
        folders = ", ".join(str(p) for p in server.config.models) or "(none given)"
        print("No model found. Put a .safetensors checkpoint (SD1.5 or SDXL) or a diffusers folder into a "
              f"models folder and pass it with --models DIR. Folders scanned: {folders}", file=sys.stderr)
    elif any(entry.embedded for entry in checkpoints):
        print("No model of your own found: serving the built-in demo model (a toy trained on simple shapes). "
              "For real work, install a checkpoint: `underpaint models download` or --models DIR", file=sys.stderr)
    else:
        print("Models: " + ", ".join(entry.name for entry in checkpoints), file=sys.stderr)


def _generate_parser(p: argparse.ArgumentParser) -> None:
    from shared.messages import Generate

    defaults = Generate(id="", mode="txt2img", model="")
    p.description = ("Generate through a running server and write PNGs (with their `parameters` chunk). "
                     "With --image it refines that picture; with --image and --mask it repaints only the "
                     "mask's white (or opaque) part and writes the whole picture.")
    p.add_argument("--prompt", required=True, help="what to paint")
    p.add_argument("--negative-prompt", default="", help="what to avoid (default: none)")
    p.add_argument("--image", type=Path, help="a picture to refine or inpaint: any format Pillow reads")
    p.add_argument("--mask", type=Path, help="with --image: inpaint where the mask is white or opaque; any format "
                   "Pillow reads, the image's size")
    p.add_argument("--fill", default=defaults.fill, choices=typing.get_args(FillMode),
                   help="with --mask: what goes into the masked part (default: %(default)s)")
    p.add_argument("--strength", type=float,
                   help="how much to change, 0..1 (default: 0.75 for --image, 1 for --mask)")
    p.add_argument("--out", type=Path, default=Path("underpaint.png"),
                   help="output PNG; a batch writes name-1.png, name-2.png, ... (default: %(default)s)")
    p.add_argument("--server", default=f"ws://127.0.0.1:{DEFAULT_PORT}", help="(default: %(default)s)")
    _token_options(p, f"the server's access token, if it has one ({IN_PS})")
    p.add_argument("--model", help="a checkpoint's name (default: the server's first usable one)")
    p.add_argument("--width", type=int, help="(default: the image's, else the size the model recommends)")
    p.add_argument("--height", type=int, help="(default: the image's, else the size the model recommends)")
    p.add_argument("--steps", type=int, help=f"(default: what the model recommends, else {defaults.steps})")
    p.add_argument("--cfg-scale", type=float,
                   help=f"(default: what the model recommends, else {defaults.cfg_scale})")
    p.add_argument("--scheduler", help=f"(default: what the model recommends, else {defaults.scheduler})")
    p.add_argument("--seed", type=int, help="(default: random)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(default: %(default)s)")


class _InputError(Exception):
    """A file given on the command line that cannot be used: one line, no traceback."""


def _picture(path: Path, option: str) -> PIL.Image.Image:
    try:
        with PIL.Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except FileNotFoundError:
        raise _InputError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise _InputError(f"{option} {path}: is a folder, not a picture") from None
    except PIL.UnidentifiedImageError:
        raise _InputError(f"{option} {path}: not a picture Pillow can read") from None
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
        raise _InputError(f"{option} {path}: cannot be read ({exc})") from None


def _coverage(mask: PIL.Image.Image) -> PIL.Image.Image:
    """A mask picture as coverage: its alpha where it has transparency (a cut-out selection), else
    its grey level (white = repaint)."""
    if mask.mode in ("RGBA", "LA", "PA") or "transparency" in mask.info:
        alpha = mask.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha
    return mask.convert("L")


def _png(picture: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _inputs(args: argparse.Namespace) -> tuple[PIL.Image.Image | None, PIL.Image.Image | None]:
    if args.mask is not None and args.image is None:
        raise _InputError("--mask needs --image: the picture to inpaint")
    image = _picture(args.image, "--image").convert("RGBA") if args.image is not None else None
    mask = _coverage(_picture(args.mask, "--mask")) if args.mask is not None else None
    if image is not None and mask is not None and mask.size != image.size:
        raise _InputError(f"--mask is {mask.width}x{mask.height} but --image is {image.width}x{image.height}: "
                          "they must be the same size")
    return image, mask


def _chosen_or_recommended(args: argparse.Namespace, models: list[ModelInfo], model: str,
                           sized: bool) -> dict[str, typing.Any]:
    """Steps, CFG scale, scheduler and (when no picture gives the size) width and height: the user's
    where given, else the model's recommendation, else left to the request's defaults."""
    info = next((m for m in models if m.kind == "checkpoint" and m.name == model), None)
    recommended = info.defaults if info is not None and info.defaults is not None else ModelDefaults()
    names = ("steps", "cfg_scale", "scheduler") + (("width", "height") if sized else ())
    chosen = {name: getattr(args, name) if getattr(args, name) is not None else getattr(recommended, name)
              for name in names}
    return {name: value for name, value in chosen.items() if value is not None}


def _generate(args: argparse.Namespace) -> int:
    from shared.client import Client, NotUnderpaint, ServerError
    from shared.messages import Generate, Image, Mask
    from shared.png import with_text

    from .imaging.outputs import parameters_text

    try:
        image, mask = _inputs(args)
        token = _token(args)
    except (_InputError, _TokenError) as exc:
        print(f"underpaint generate: {exc}", file=sys.stderr)
        return 2
    try:
        client = Client(args.server, name="underpaint-cli", token=token)
    except NotUnderpaint as exc:
        print(f"underpaint generate: {exc}; check --server", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"underpaint generate: cannot reach {args.server}: {exc}. Is `underpaint serve` running?",
              file=sys.stderr)
        return 1
    with client:
        model = args.model or next((m.name for m in client.welcome.models if m.usable_checkpoint), None)
        if model is None:
            print("underpaint generate: the server has no usable model", file=sys.stderr)
            return 1
        mode = "inpaint" if mask is not None else "img2img" if image is not None else "txt2img"
        request = Generate(
            id=uuid.uuid4().hex, mode=mode, model=model, prompt=args.prompt, negative_prompt=args.negative_prompt,
            image=Image(width=image.width, height=image.height, format="png", data=_png(image)) if image else None,
            mask=Mask(width=mask.width, height=mask.height, format="png", data=_png(mask)) if mask else None,
            fill=args.fill, strength=args.strength, seed=args.seed, batch_size=args.batch_size, result_format="png",
            **_chosen_or_recommended(args, client.welcome.models, model, sized=image is None),
        )
        try:
            result = client.generate(request)
        except ServerError as exc:
            print(f"underpaint generate: {exc}", file=sys.stderr)
            return 1
    for index, item in enumerate(result.images, start=1):
        path = args.out if len(result.images) == 1 else args.out.with_stem(f"{args.out.stem}-{index}")
        data = item.image.data
        if mask is not None:
            # The server sends the repainted patch alone; the command line's user wants the picture.
            whole = image.copy()
            whole.alpha_composite(PIL.Image.open(io.BytesIO(data)).convert("RGBA"), (item.image.x, item.image.y))
            data = _png(whole)
        path.write_bytes(with_text(data, "parameters", parameters_text(result.info, item.seed)))
        print(f"{path} (seed {item.seed}, {result.elapsed:.1f} s)")
    return 0
