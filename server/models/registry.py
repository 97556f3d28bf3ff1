"""Which models the server can offer: found in the users' model folders, identified by content.

Each folder given is scanned, together with the sub-folders that A1111 and ComfyUI use
(`checkpoints/`, `Stable-diffusion/`, `loras/`, `Lora/`, `embeddings/`, `upscale_models/`, `ESRGAN/`,
`controlnet/`, `ControlNet/`, `ipadapter/`, `clip_vision/`, also under `models/`), so an existing models
folder works as it is. Found are diffusers folders (with `model_index.json`) and `.safetensors` files; what
each holds (checkpoint, LoRA, embedding, ControlNet, IP-Adapter, CLIP vision encoder; SD1.5 / SDXL; regular /
9-channel inpaint) is read from its contents by identify.py. Pickle files are never unpickled: they are
listed as refused, except upscalers' `.pth` files, which are read with `torch.load(weights_only=True)`
(tensors only; a file holding anything else is refused, never run) and identified by upscalers.py.

Names come from file and folder names. A name a client sends is looked up in the registry and
never joined to a path.

A single-file checkpoint of an unusual architecture loads with the diffusers config folder next
to it, named `<stem>.config/` (model_index.json and component configs, as `save_pretrained`
writes them); otherwise the configs shipped in server/models/configs/ are used.
"""

from __future__ import annotations

import errno
import functools
import importlib
import logging
import os
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from ..errors import BadInput, ModelBroken, UnknownModel
from . import upscalers
from .defaults import sidecar_path, with_defaults
from .entry import Kind, ModelEntry, is_valid_name
from .identify import (
    PICKLE_SUFFIXES,
    identify_controlnet_folder,
    identify_file,
    identify_folder,
    is_tiny_autoencoder,
)

Identify = Callable[[Path, Kind], ModelEntry]
IdentifyFolder = Callable[[Path, Kind], ModelEntry]

log = logging.getLogger(__name__)

# Sub-folder name -> the kind of file a user keeps there (A1111 and ComfyUI spellings).
SUBFOLDERS: dict[str, Kind] = {
    "checkpoints": "checkpoint",
    "Stable-diffusion": "checkpoint",
    "loras": "lora",
    "Lora": "lora",
    "embeddings": "embedding",
    "upscale_models": "upscaler",
    "ESRGAN": "upscaler",
    "controlnet": "controlnet",
    "ControlNet": "controlnet",  # A1111's ControlNet extension keeps IP-Adapters here too: told apart by keys
    "ipadapter": "ipadapter",
    "clip_vision": "clip_vision",
}
# The file that makes a folder a diffusers model: a pipeline's index, or a ControlNet's config.
FOLDER_MARKERS: dict[str, str] = {"controlnet": "config.json"}
# What identify_folder reads, and the folders whose files it looks for; and the same of a ControlNet.
FOLDER_PARTS: dict[str, tuple[str, ...]] = {
    "checkpoint": ("model_index.json", "unet/config.json", "unet", "vae", "text_encoder", "text_encoder_2"),
    "controlnet": ("config.json", "."),
}
# Folders holding tiny autoencoders (TAESD, TAESDXL) for live frames, in the spellings of this server,
# A1111 and ComfyUI.
TINY_AUTOENCODER_FOLDERS = ("vae-approx", "VAE-approx", "vae_approx")
CONFIG_SUFFIX = ".config"
MAX_DEPTH = 4
# A file whose header is not read within this time (a network drive that stopped answering) is listed
# as refused instead of holding up the scan, and with it the server's start and every `models` reply.
READ_TIMEOUT = 10.0
SLOW = f"could not be read within {READ_TIMEOUT:g} s (a network drive that does not answer?)"


class Registry:
    def __init__(self, folders: Sequence[Path]):
        self.folders = [Path(f) for f in folders]
        self._entries: dict[tuple[str, str], ModelEntry] = {}
        self._tiny_autoencoders: dict[str, Path] = {}
        # What each file was found to be, by its identity on disk: a rescan reads only files that changed.
        self._identified: dict[tuple, ModelEntry] = {}
        # The settings each checkpoint recommends, by the identity on disk of the files they are read
        # from: a rescan (every `models` request) reads them again only when one of those changed.
        self._recommended: dict[tuple, ModelEntry] = {}
        self._lock = threading.Lock()

    def scan(self) -> None:
        """(Re)scan all folders. Builds a new table and swaps it in, so lookups never see half a scan."""
        found: dict[tuple[str, str], ModelEntry] = {}
        identified: dict[tuple, ModelEntry] = {}

        def known(key: tuple | None, read: Callable[[], ModelEntry]) -> ModelEntry:
            entry = self._identified.get(key) if key is not None else None
            if entry is None:
                entry = read()
            if key is not None and entry.refused != SLOW:
                identified[key] = entry
            return entry

        def identify(path: Path, kind: Kind) -> ModelEntry:
            return known(_file_key(path, kind), lambda: identify_within(path, kind, READ_TIMEOUT))

        def identify_dir(folder: Path, kind: Kind) -> ModelEntry:
            return known(_folder_key(folder, kind), lambda: identify_diffusers_folder(folder, kind))

        for entry in scan_folders(self.folders, identify, identify_dir):
            key = (entry.kind, entry.name)
            if key in found:
                log.warning("%s %r at %s is hidden by the one at %s", entry.kind, entry.name, entry.path,
                            found[key].path)
                continue
            found[key] = entry
        if not any(e.kind == "checkpoint" and not e.refused for e in found.values()):
            demo = embedded_entry()
            if demo is not None:
                found[(demo.kind, demo.name)] = demo
                # Its ControlNets fit only its UNet: they are offered with it, and a user's of the same
                # name comes first.
                for net in embedded_controlnets():
                    found.setdefault((net.kind, net.name), net)
                for model in embedded_references(demo):
                    found.setdefault((model.kind, model.name), model)
        recommended: dict[tuple, ModelEntry] = {}

        def with_settings(entry: ModelEntry) -> ModelEntry:
            key = _settings_key(entry)
            done = self._recommended.get(key) if key is not None else None
            if done is None:
                done = with_defaults(entry)
            if key is not None:
                recommended[key] = done
            return done

        found = {key: with_settings(entry) for key, entry in found.items()}
        tiny = find_tiny_autoencoders(self.folders)
        with self._lock:
            self._entries = found
            self._tiny_autoencoders = tiny
            self._identified = identified
            self._recommended = recommended
        usable = sum(1 for e in found.values() if not e.refused)
        log.info("models: %d usable, %d refused", usable, len(found) - usable)

    def entries(self) -> list[ModelEntry]:
        """All entries, refused ones included, sorted by kind then name."""
        return sorted(self._entries.values(), key=lambda e: (e.kind, e.name.lower(), e.name))

    def checkpoints(self) -> list[ModelEntry]:
        """Checkpoints that can be used."""
        return [e for e in self.entries() if e.kind == "checkpoint" and not e.refused]

    def tiny_autoencoder(self, entry: ModelEntry) -> Path | None:
        """The tiny autoencoder for `entry`'s latents: its own, else its family's as found by the last scan.
        The demo model's latents are its own VAE's, not SD1.5's: only its own tiny autoencoder fits."""
        if entry.tiny_autoencoder is not None or entry.embedded:
            return entry.tiny_autoencoder
        return self._tiny_autoencoders.get(entry.family) if entry.family else None

    def get(self, name: str, kind: str = "checkpoint", field: str = "model") -> ModelEntry:
        if not is_valid_name(name):
            raise BadInput(f"{field} {name!r} is not a model name: names have no '/', '\\' or '..'", field)
        entry = self._entries.get((kind, name))
        if entry is None:
            raise UnknownModel(f"there is no {kind} named {name!r} on this server", field)
        if entry.refused:
            raise ModelBroken(f"{name} cannot be used: {entry.refused}", field)
        return entry

    def mark_broken(self, name: str, reason: str, kind: str = "checkpoint") -> None:
        """Record that a model failed to load; it is listed as refused until the next scan."""
        with self._lock:
            entry = self._entries.get((kind, name))
            if entry is not None:
                self._entries = {**self._entries, (kind, name): replace(entry, refused=reason)}


# --- scanning ------------------------------------------------------------------------------------


def identify_diffusers_folder(folder: Path, kind: Kind) -> ModelEntry:
    """A diffusers folder found where models of `kind` live: a ControlNet in a ControlNet folder, else a
    pipeline (a checkpoint)."""
    return identify_controlnet_folder(folder) if kind == "controlnet" else identify_folder(folder)


def scan_folders(folders: Sequence[Path], identify: Identify = identify_file,
                 identify_dir: IdentifyFolder = identify_diffusers_folder) -> Iterator[ModelEntry]:
    seen: set[str] = set()
    for folder in folders:
        if folder.name in SUBFOLDERS and folder.is_dir():
            # Pointed straight at an app's checkpoints (or LoRA, embeddings) folder.
            yield from _scan(folder, SUBFOLDERS[folder.name], MAX_DEPTH, seen, identify, identify_dir)
            continue
        for base in (folder, folder / "models"):
            # The folder itself only at its top level: it may be any folder a user points at.
            yield from _scan(base, "checkpoint", 1, seen, identify, identify_dir)
            for sub, kind in SUBFOLDERS.items():
                yield from _scan(base / sub, kind, MAX_DEPTH, seen, identify, identify_dir)


def _listing(folder: Path) -> list[os.DirEntry]:
    """`folder`'s entries by name, hidden ones left out; empty when it is not a folder we can list.
    A rescan runs on every `models` request, and while other threads parse prompts each system call
    waits for a turn of the interpreter: the listing's entry types cost no call of their own."""
    try:
        with os.scandir(folder) as found:
            return sorted((child for child in found if not child.name.startswith(".")), key=lambda c: c.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno != errno.ENOTDIR:
            log.warning("cannot list %s: %s", folder, exc.strerror)
        return []


def _scan(folder: Path, kind: Kind, depth: int, seen: set[str], identify: Identify,
          identify_dir: IdentifyFolder) -> Iterator[ModelEntry]:
    """Models in `folder` and, `depth` - 1 levels down, in its sub-folders."""
    children = _listing(folder)
    real_folder = os.path.realpath(folder) if children else ""
    for child in children:
        try:
            # Only links need resolving: anything else is where its folder really is.
            real = os.path.realpath(child.path) if child.is_symlink() else os.path.join(real_folder, child.name)
            is_dir = child.is_dir()
        except OSError:
            continue
        if real in seen:
            continue
        path = folder / child.name
        suffix = path.suffix.lower()
        if is_dir:
            if (path / FOLDER_MARKERS.get(kind, "model_index.json")).is_file():
                seen.add(real)
                if not _is_config_of_file(path):
                    yield identify_dir(path, kind)
            elif depth > 1:
                yield from _scan(path, kind, depth - 1, seen, identify, identify_dir)
        elif kind == "upscaler" and suffix in upscalers.SUFFIXES:
            seen.add(real)
            yield identify(path, kind)
        elif suffix in PICKLE_SUFFIXES or suffix == ".safetensors":
            seen.add(real)
            yield identify(path, kind)


def _settings_key(entry: ModelEntry) -> tuple | None:
    """What changes when anything a checkpoint's recommended settings are read from changes (its file or
    its folder's configs, and its sidecar); None when it cannot be told."""
    sources = [sidecar_path(entry.path)]
    sources += [entry.path] if entry.format == "single_file" else [entry.path / "unet" / "config.json",
                                                                    entry.path / "vae" / "config.json"]
    return _identities((entry,), sources)


def _file_key(path: Path, kind: Kind) -> tuple | None:
    """What changes when a file is replaced or rewritten; None when it cannot be told."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return str(path), kind, found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


def _folder_key(folder: Path, kind: Kind) -> tuple | None:
    """What changes when what a diffusers folder is identified by changes: its configs, and which files
    its folders hold (a file added or removed changes its folder's modification time)."""
    parts = FOLDER_PARTS.get(kind, FOLDER_PARTS["checkpoint"])  # a pipeline, wherever it is found
    return _identities((str(folder), kind), [folder / part for part in parts])


def _identities(key: tuple, paths: Sequence[Path]) -> tuple | None:
    """`key` followed by each path's identity on disk (None for a missing one); None when one cannot be
    told."""
    for path in paths:
        try:
            found = os.stat(path)
        except FileNotFoundError:
            key += (None,)
        except OSError:
            return None
        else:
            key += ((found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns),)
    return key


def identify_within(path: Path, kind: Kind, seconds: float) -> ModelEntry:
    """identify_file (upscalers.identify for upscalers), or an entry refused as SLOW when reading takes
    longer than `seconds` (the reading thread is left to finish on its own: a read stuck in the kernel
    cannot be interrupted)."""
    found: list[ModelEntry] = []
    read = upscalers.identify if kind == "upscaler" else functools.partial(identify_file, kind_hint=kind)
    reader = threading.Thread(target=lambda: found.append(read(path)), name="underpaint-scan",
                              daemon=True)
    reader.start()
    reader.join(seconds)
    if found:
        return found[0]
    log.warning("%s was not read within %g s; listed as refused", path, seconds)
    return ModelEntry(name=path.stem, kind=kind, path=path, format="single_file", family=None, refused=SLOW)


def _is_config_of_file(folder: Path) -> bool:
    return folder.suffix == CONFIG_SUFFIX and folder.with_suffix(".safetensors").is_file()


def find_tiny_autoencoders(folders: Sequence[Path]) -> dict[str, Path]:
    """family -> the first tiny autoencoder (folder or weights file) found for it. TAESD and TAESDXL
    share one architecture, so unlike checkpoints their family can only come from the name: a name
    containing "xl" is for SDXL."""
    found: dict[str, Path] = {}
    for root in folders:
        for name in TINY_AUTOENCODER_FOLDERS:
            parent = root / name
            if not parent.is_dir():
                continue
            for candidate in sorted(parent.iterdir()):
                if is_tiny_autoencoder(candidate):
                    found.setdefault("sdxl" if "xl" in candidate.name.lower() else "sd15", candidate)
    return found


def _demo_module() -> types.ModuleType | None:
    """The package of the demo model that ships with the server; None when it is not installed."""
    try:
        return importlib.import_module(f"{__package__}.demo")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.demo":
            return None
        raise


def embedded_entry() -> ModelEntry | None:
    """The demo model that ships with the server, when it is installed."""
    demo = _demo_module()
    if demo is None:
        return None
    model_dir = Path(demo.MODEL_DIR)
    if not (model_dir / "model_index.json").is_file():
        return None
    tiny = getattr(demo, "TINY_AUTOENCODER_DIR", None)  # a demo model may come without one
    return replace(identify_folder(model_dir, name=demo.NAME), embedded=True,
                   tiny_autoencoder=Path(tiny) if tiny and is_tiny_autoencoder(Path(tiny)) else None)


def embedded_controlnets() -> list[ModelEntry]:
    """The demo model's ControlNets (diffusers folders in its CONTROLNET_DIR), identified as a user's are."""
    demo = _demo_module()
    folder = getattr(demo, "CONTROLNET_DIR", None) if demo is not None else None
    if folder is None:
        return []
    configs = sorted(Path(folder).glob(f"*/{FOLDER_MARKERS['controlnet']}"))
    return [replace(identify_controlnet_folder(config.parent), embedded=True) for config in configs]


def embedded_references(demo: ModelEntry) -> list[ModelEntry]:
    """The demo model's reference adapters and the image encoders they read with (single files in its
    IPADAPTER_DIR and CLIP_VISION_DIR), identified as a user's are. An adapter's widths are the demo UNet's
    own and tell no family: it takes the demo model's."""
    module = _demo_module()
    found = []
    for attribute, kind in (("IPADAPTER_DIR", "ipadapter"), ("CLIP_VISION_DIR", "clip_vision")):
        folder = getattr(module, attribute, None) if module is not None else None
        for path in sorted(Path(folder).glob("*.safetensors")) if folder is not None else ():
            entry = replace(identify_file(path, kind), embedded=True)
            found.append(replace(entry, family=demo.family) if kind == "ipadapter" else entry)
    return found
