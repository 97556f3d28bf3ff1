"""Upscaler models and pictures upscaled with them, in tiles.

An upscaler is any single-image super-resolution model spandrel knows (ESRGAN and Real-ESRGAN,
SwinIR, HAT, DAT, SPAN, ...): spandrel tells the architecture and the scale from the weights, as
ComfyUI does. They are found in `upscale_models/` (ComfyUI) and `ESRGAN/` (A1111) by the registry.

Files are `.safetensors`, or `.pth` read with `torch.load(weights_only=True)`: PyTorch's restricted
unpickler, which builds tensors and plain containers and refuses every other global, so a file
that would run code when unpickled is refused instead (tests/test_upscale.py proves it with one).
spandrel's own `.pth` loader is not used.

Without an upscaler model, pictures are enlarged by Lanczos resampling.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import pickle
import stat
import sys
import threading
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from safetensors.torch import load_file

from ..errors import ModelBroken
from ..imaging import tiles
from ..imaging.tiles import TileCallback
from .entry import ModelEntry
from .identify import NOT_REGULAR

log = logging.getLogger(__name__)

SUFFIXES = frozenset({".safetensors", ".pth"})
LANCZOS = "lanczos"
# Tiles of the picture an upscaler sees at once, in its input pixels: ESRGAN-sized models need
# about 1 GB per 512² tile in float32; 256² keeps a 4x model under a few hundred MB whatever the
# picture's size. Overlap and feather hide the tiles' edges (docs/upscale.md).
TILE = 256
OVERLAP = 16
FEATHER = 16
# A model file larger than this is no upscaler (the largest common ones are a few hundred MB).
MAX_FILE = 2 * 1024**3


def identify(path: Path) -> ModelEntry:
    """An upscaler file as the registry lists it: its scale read from its weights, or why it is refused."""
    entry = ModelEntry(name=path.stem, kind="upscaler", path=path, format="single_file", family=None)
    try:
        found = path.stat()
        if not stat.S_ISREG(found.st_mode):
            return replace(entry, refused=NOT_REGULAR)
        if found.st_size > MAX_FILE:
            return replace(entry, refused=f"larger than {MAX_FILE // 1024**3} GB: not an upscaler model")
        descriptor = load(path)
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, it is refused with a reason
        log.warning("upscaler %s refused: %s", path, str(exc).strip().split("\n")[0])
        return replace(entry, refused=refusal(exc))
    return replace(entry, scale=descriptor.scale)


def refusal(exc: Exception) -> str:
    if isinstance(exc, pickle.UnpicklingError):
        return ("holds pickled objects other than tensors, which can run code when opened; "
                "use the .safetensors version of this model")
    if type(exc).__name__ == "UnsupportedModelError":
        return "not an upscaler architecture this server knows"
    if isinstance(exc, NotAnUpscaler):
        return str(exc)
    return "cannot be read: the file is truncated or not an upscaler model"


class NotAnUpscaler(ValueError):
    """A model spandrel loads that does not upscale RGB pictures (face restoration, inpainting...)."""


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an upscaler file, never unpickling anything but tensors and plain containers."""
    if path.suffix.lower() == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load(path: Path) -> Any:
    """The file's model as a spandrel `ImageModelDescriptor`, in eval mode on the CPU."""
    spandrel = _spandrel()
    descriptor = spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(read_weights(path)))
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != "SR":
        raise NotAnUpscaler(f"a {descriptor.architecture.name} model, not an upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise NotAnUpscaler("does not take and give RGB pictures")
    return descriptor.eval()


def _spandrel() -> types.ModuleType:
    """spandrel, imported without torchvision where it is not installed (requirements/excludes.txt).

    spandrel imports three names from torchvision for two architectures that are no upscalers
    (LaMa inpainting, RestoreFormer faces). Stand-ins that refuse to run serve that import, and
    are gone from `sys.modules` again once spandrel has bound them."""
    if "spandrel" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        import spandrel

        return spandrel

    def unavailable(*args: object, **kwargs: object) -> None:
        raise NotAnUpscaler("this model needs torchvision, which Underpaint does not install")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.normalize = functional.rotate = unavailable
    functional.InterpolationMode = types.SimpleNamespace(NEAREST="nearest", BILINEAR="bilinear", BICUBIC="bicubic")
    stand_ins = {"torchvision": types.ModuleType("torchvision"),
                 "torchvision.transforms": types.ModuleType("torchvision.transforms"),
                 "torchvision.transforms.functional": functional}
    for name, module in stand_ins.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules.update(stand_ins)
    try:
        import spandrel
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    return spandrel


class Upscalers:
    """Upscales pictures with the registry's upscalers, the last one used kept loaded."""

    def __init__(self, entries: Any, device: torch.device, dtype: torch.dtype):
        self.entries = entries  # the registry: `get(name, kind)`, `entries()`
        self.device = device
        self.dtype = dtype
        self._loaded: tuple[Path, Any] | None = None
        self._lock = threading.Lock()

    def choose(self, name: str | None, field: str = "upscaler") -> ModelEntry | None:
        """The upscaler named (UnknownModel or ModelBroken if it cannot be used), else the first usable one,
        else None (Lanczos)."""
        if name is not None:
            return self.entries.get(name, "upscaler", field)
        return next((e for e in self.entries.entries() if e.kind == "upscaler" and not e.refused), None)

    def upscale(self, picture: PIL.Image.Image, size: tuple[int, int], entry: ModelEntry | None,
                on_tile: TileCallback | None = None) -> PIL.Image.Image:
        """`picture` (RGB) at `size`: through the upscaler in tiles, then resampled to the exact size (a 4x
        model serves a 2x request); by Lanczos alone without an upscaler."""
        if entry is not None:
            model = self._model(entry)
            dtype = self.dtype if (self.dtype == torch.float16 and model.supports_half) else torch.float32
            # Held as 8-bit pixels, each tile made float as it runs: a float copy of the whole picture
            # would grow with it.
            pixels = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)[None]

            def run(tile: torch.Tensor) -> torch.Tensor:
                with torch.inference_mode():
                    return model(tile.to(self.device, dtype) / 255.0)

            model.to(self.device, dtype)
            upscaled = tiles.pictures(pixels, run, TILE, OVERLAP, FEATHER, model.scale, on_tile, fit=True)
            picture = PIL.Image.fromarray(upscaled[0])
        if picture.size == size:
            return picture
        return picture.resize(size, PIL.Image.Resampling.LANCZOS)

    def _model(self, entry: ModelEntry) -> Any:
        with self._lock:
            if self._loaded is None or self._loaded[0] != entry.path:
                self._loaded = None  # the old one goes before the new one loads
                try:
                    self._loaded = (entry.path, load(entry.path))
                except Exception as exc:
                    log.exception("upscaler %s could not be loaded", entry.name)
                    raise ModelBroken(f"{entry.name} could not be loaded: {refusal(exc)}", "upscaler") from exc
            return self._loaded[1]
