"""The server's commands: `underpaint serve` and `underpaint generate` (`python -m server ...`).

The `underpaint` command itself (installer.launch) adds the commands that look after an install.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

from shared import DEFAULT_PORT
from shared.paths import data_dir


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
    p.add_argument("--token", help="required of clients; mandatory when --host is not loopback")
    p.add_argument("--max-message", type=int, default=256 * 1024 * 1024, help="largest frame in bytes")
    p.add_argument("--cache-size", type=int, default=1, help="models kept loaded at once")
    p.add_argument("--max-connections", type=int, default=ServerConfig.max_connections,
                   help="websocket connections open at once; more are refused with 'busy'")
    p.add_argument("--allow-origin", action="append", default=[],
                   help="a browser origin allowed to connect (default: none)")
    p.add_argument("--log-file", type=Path,
                   help="one JSON line per job (no prompts); rotates at 10 MiB, keeping 5 old files")


def _serve(args: argparse.Namespace) -> int:
    from . import logs

    logs.configure()
    from shared.messages import Limits

    from .config import ServerConfig
    from .net.server import Server

    config = ServerConfig(
        models=args.models or _default_models(), host=args.host, port=args.port, device=args.device, dtype=args.dtype,
        outputs=args.outputs, token=args.token, limits=Limits(max_message=args.max_message),
        cache_size=args.cache_size, allowed_origins=tuple(args.allow_origin), log_file=args.log_file,
        max_connections=args.max_connections,
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
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--image", type=Path, help="a PNG to refine (img2img)")
    p.add_argument("--strength", type=float)
    p.add_argument("--out", type=Path, default=Path("underpaint.png"),
                   help="output PNG; a batch writes name-1.png, name-2.png, ...")
    p.add_argument("--server", default=f"ws://127.0.0.1:{DEFAULT_PORT}")
    p.add_argument("--token")
    p.add_argument("--model", help="default: the server's first model")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", type=float, default=7.0)
    p.add_argument("--scheduler", default="dpmpp_2m")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int, default=1)


def _generate(args: argparse.Namespace) -> int:
    from shared.client import Client, ServerError
    from shared.messages import Generate, Image
    from shared.png import png_size

    try:
        client = Client(args.server, name="underpaint-cli", token=args.token)
    except (OSError, TimeoutError) as exc:
        print(f"underpaint generate: cannot reach {args.server}: {exc}. Is `underpaint serve` running?",
              file=sys.stderr)
        return 1
    with client:
        model = args.model or next(
            (m["name"] for m in client.welcome.models if m.get("kind") == "checkpoint" and not m.get("refused")),
            None)
        if model is None:
            print("underpaint generate: the server has no usable model", file=sys.stderr)
            return 1
        image = None
        if args.image is not None:
            data = args.image.read_bytes()
            width, height = png_size(data)
            image = Image(width=width, height=height, format="png", data=data)
        request = Generate(
            id=uuid.uuid4().hex, mode="img2img" if image else "txt2img", model=model, prompt=args.prompt,
            negative_prompt=args.negative_prompt, width=args.width, height=args.height, image=image,
            strength=args.strength, steps=args.steps, cfg_scale=args.cfg_scale, scheduler=args.scheduler,
            seed=args.seed, batch_size=args.batch_size, result_format="png",
        )
        try:
            result = client.generate(request)
        except ServerError as exc:
            print(f"underpaint generate: {exc}", file=sys.stderr)
            return 1
    for index, item in enumerate(result.images, start=1):
        path = args.out if len(result.images) == 1 else args.out.with_stem(f"{args.out.stem}-{index}")
        path.write_bytes(item.image.data)
        print(f"{path} (seed {item.seed}, {result.elapsed:.1f} s)")
    return 0
