"""The settings each checkpoint is meant to be used with, which clients take for every setting their
user has not chosen (`ModelInfo.defaults`, docs/protocol.md).

Each setting comes from the first of these that names it:
1. a sidecar `<model>.json` beside the checkpoint's file or folder (`cfg_scale`, `steps`,
   `scheduler`, `width`, `height`; other keys, such as those A1111 writes there, are ignored);
2. the checkpoint's own metadata: `modelspec.resolution` in a safetensors header, the UNet's
   `sample_size` in a diffusers folder;
3. its family (FAMILY).

A sidecar is the user's file and may hold anything: it is read only when it is a regular file of
at most SIDECAR_BYTES, and each value is checked against the protocol's bounds; a bad one is
ignored with a log line, the others still count.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from safetensors import safe_open

from shared.files import Unreadable, is_regular_file, read_small_file
from shared.messages import ModelDefaults
from shared.schema import from_wire_lenient

from .entry import ModelEntry
from .schedulers import SAMPLERS

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
SIDECAR_BYTES = 64 * 1024
CONFIG_BYTES = 1024 * 1024  # a diffusers UNet's config.json is about 2 KB
FAMILY: dict[str, ModelDefaults] = {
    "sd15": ModelDefaults(cfg_scale=7.0, steps=20, scheduler="dpmpp_2m", width=512, height=512),
    "sdxl": ModelDefaults(cfg_scale=6.0, steps=30, scheduler="dpmpp_2m", width=1024, height=1024),
}
_RESOLUTION = re.compile(r"^\s*(\d{2,5})\s*[x×]\s*(\d{2,5})\s*$")


def with_defaults(entry: ModelEntry) -> ModelEntry:
    """`entry` with the settings it recommends; entries that cannot be used as checkpoints unchanged."""
    if entry.kind != "checkpoint" or entry.refused:
        return entry
    return replace(entry, defaults=recommended(entry))


def recommended(entry: ModelEntry) -> ModelDefaults:
    found = FAMILY.get(entry.family or "", ModelDefaults())
    for layer in (_own_metadata(entry), read_sidecar(sidecar_path(entry.path))):
        found = replace(found, **{f.name: getattr(layer, f.name) for f in fields(layer)
                                  if getattr(layer, f.name) is not None})
    return found


def sidecar_path(model: Path) -> Path:
    """`name.json` for `name.safetensors` or for the diffusers folder `name/`."""
    return model.with_name((model.stem if model.is_file() else model.name) + SIDECAR_SUFFIX)


def read_sidecar(path: Path) -> ModelDefaults:
    """What a sidecar file recommends; nothing when there is none or it cannot be used."""
    data = _read_json(path, SIDECAR_BYTES)
    if data is None:
        return ModelDefaults()
    return checked(data, f"{path.name}: ")


def checked(data: dict[str, Any], where: str = "") -> ModelDefaults:
    """The recommendations in `data` that are within the protocol's bounds; each one that is not is
    logged and left out."""
    found, problems = from_wire_lenient(ModelDefaults, data)
    for problem in problems:
        log.warning("%signored %s: %s", where, problem.field, problem.message)
    if found.scheduler is not None and found.scheduler not in SAMPLERS:
        log.warning("%signored scheduler %r: not one of %s", where, found.scheduler[:64], ", ".join(SAMPLERS))
        found = replace(found, scheduler=None)
    return found


def _own_metadata(entry: ModelEntry) -> ModelDefaults:
    if entry.format == "single_file":
        metadata = _safetensors_metadata(entry.path)
        size = _RESOLUTION.match(metadata.get("modelspec.resolution", ""))
        if size is None:
            return ModelDefaults()
        return checked({"width": int(size.group(1)), "height": int(size.group(2))}, f"{entry.path.name}: ")
    unet = _read_json(entry.path / "unet" / "config.json", CONFIG_BYTES) or {}
    vae = _read_json(entry.path / "vae" / "config.json", CONFIG_BYTES) or {}
    sample, blocks = unet.get("sample_size"), vae.get("block_out_channels")
    if not isinstance(sample, int) or not isinstance(blocks, list) or not blocks:
        return ModelDefaults()
    side = sample * 2 ** (len(blocks) - 1)  # the VAE halves the picture at each block but the last
    return checked({"width": side, "height": side}, f"{entry.path.name}: ")


def _safetensors_metadata(path: Path) -> dict[str, str]:
    if not is_regular_file(path):
        return {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - identify.py has read this header once; a file changed since is no model
        log.warning("%s: its metadata cannot be read (%s)", path, exc)
        return {}


def _read_json(path: Path, limit: int) -> dict[str, Any] | None:
    """A JSON object from a regular file of at most `limit` bytes; None when there is none, with a
    log line when there is a file that cannot be used."""
    try:
        raw = read_small_file(path, limit)
    except Unreadable as exc:
        log.warning("%s is ignored: %s", path, exc)
        return None
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning("%s is ignored: not JSON (%s)", path, exc)
        return None
    if not isinstance(data, dict):
        log.warning("%s is ignored: not a JSON object", path)
        return None
    return data
