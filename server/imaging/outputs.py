"""Results on disk: PNG with an A1111-style `parameters` chunk, written before anything is sent."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.PngImagePlugin
import psutil

log = logging.getLogger("underpaint.outputs")
# A temporary file older than this is left over whatever its name says (its process id may be reused).
STALE_AFTER = 24 * 3600


def parameters_text(info: dict[str, Any], seed: int) -> str:
    """The `parameters` text A1111, ComfyUI importers and image browsers read."""
    lines = [info.get("prompt", "")]
    if info.get("negative_prompt"):
        lines.append(f"Negative prompt: {info['negative_prompt']}")
    fields = {
        "Steps": info.get("steps"),
        "Sampler": info.get("sampler"),
        "CFG scale": info.get("cfg_scale"),
        "Seed": seed,
        "Size": f"{info.get('width')}x{info.get('height')}",
        "Model": info.get("model"),
        "Denoising strength": info.get("strength") if info.get("mode") != "txt2img" else None,
        "Guidance rescale": info.get("guidance_rescale") or None,
        "Mode": info.get("mode"),
    }
    # As A1111's ControlNet extension writes them; the image was sent as made, so no module ran.
    for i, item in enumerate(info.get("controls", [])):
        fields[f"ControlNet {i}"] = (f'"Module: none, Model: {item["model"]}, Weight: {item["strength"]}, '
                                     f'Guidance Start: {item["start"]}, Guidance End: {item["end"]}, '
                                     f'Control Type: {item["kind"]}"')
    # Reference pictures as the extension writes an IP-Adapter unit, numbered on after the controls.
    first = len(info.get("controls", []))
    for i, item in enumerate(info.get("references", []), start=first):
        fields[f"ControlNet {i}"] = (f'"Module: {item["module"]}, Model: {item["model"]}, Weight: {item["strength"]}, '
                                     f'Guidance Start: {item["start"]}, Guidance End: {item["end"]}"')
    lines.append(", ".join(f"{key}: {value}" for key, value in fields.items() if value is not None))
    return "\n".join(lines)


TEMPORARY = ".tmp"


class OutputWriter:
    """Writes results under `root/YYYY-MM-DD/`. File names come from time and a counter only,
    never from anything a client sent."""

    def __init__(self, root: Path):
        self.root = root
        self._counter = 0
        self._lock = threading.Lock()

    def save(self, image: PIL.Image.Image, info: dict[str, Any], seed: int) -> Path | None:
        """Write one result; a full or read-only disk is logged, not raised: the artist still gets
        the image over the connection."""
        with self._lock:
            self._counter += 1
            counter = self._counter
        folder = self.root / time.strftime("%Y-%m-%d")
        name = f"{time.strftime('%H%M%S')}-{os.getpid()}-{counter:05d}-{seed}.png"
        meta = PIL.PngImagePlugin.PngInfo()
        meta.add_text("parameters", parameters_text(info, seed))
        temporary = folder / f".{name}{TEMPORARY}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            image.save(temporary, format="PNG", pnginfo=meta, compress_level=4)
            os.replace(temporary, folder / name)
        except OSError as exc:
            log.error("could not save a result to %s: %s", folder, exc)
            with contextlib.suppress(OSError):  # the folder itself may be what is broken
                temporary.unlink(missing_ok=True)
            return None
        return folder / name

    def clean(self) -> int:
        """Remove the temporary files of saves that never finished (a server killed mid-save), so they do
        not stay hidden in the outputs forever; returns how many. A server still running on the same
        folder keeps its own: the writer's process id is part of each name."""
        removed = 0
        for path in self.root.glob(f"*/.*{TEMPORARY}"):
            if _is_left_over(path):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        if removed:
            log.info("removed %d unfinished results from %s", removed, self.root)
        return removed


def _is_left_over(path: Path) -> bool:
    """Whether the writer of a temporary file `.HHMMSS-PID-COUNTER-SEED.png.tmp` is gone."""
    try:
        age = time.time() - path.stat().st_mtime
        writer = int(path.name.split("-")[1])
    except (OSError, IndexError, ValueError):
        return False
    return age > STALE_AFTER or not psutil.pid_exists(writer)
