"""Loading models onto the device: diffusers folders and single-file checkpoints, with no network.

A model is loaded on first use and stays resident; the least recently used one is freed when a
new one needs its place (`capacity` models at most, 1 by default: a GPU rarely holds two).
"""

from __future__ import annotations

import gc
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from ..errors import ModelBroken, OutOfMemory
from . import interrupts
from .entry import ModelEntry
from .memory import is_out_of_memory
from .registry import CONFIG_SUFFIX

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent / "configs"
PIPELINES: dict[tuple[str, str], type[DiffusionPipeline]] = {
    ("sd15", "regular"): StableDiffusionPipeline,
    ("sd15", "inpaint"): StableDiffusionInpaintPipeline,
    ("sdxl", "regular"): StableDiffusionXLPipeline,
    ("sdxl", "inpaint"): StableDiffusionXLInpaintPipeline,
}
# No safety checker: the painter decides what is on the canvas (and it needs weights we do not ship).
NO_SAFETY_CHECKER = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
MAX_REASON = 200


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; a named device must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not a torch device (try auto, cuda, cuda:1, mps or cpu)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch build or machine has no CUDA GPU (try auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) present")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available on this machine (try auto or cpu)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is float16 on GPUs (half the memory, same pictures) and float32 on the CPU (fp16 is slow there)."""
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def config_dir(entry: ModelEntry) -> Path:
    """The diffusers configs a single-file checkpoint loads with: its own `<stem>.config/`, else the shipped ones."""
    own = entry.path.with_suffix(CONFIG_SUFFIX)
    if (own / "model_index.json").is_file():
        return own
    name = entry.family if entry.variant == "regular" else f"{entry.family}-inpaint"
    return CONFIGS / name


def weights_variant(folder: Path) -> str | None:
    """'fp16' for diffusers folders that ship only half-precision weight files."""
    unet = folder / "unet"
    if any(unet.glob("diffusion_pytorch_model.safetensors*")):
        return None
    return "fp16" if any(unet.glob("*.fp16.safetensors")) else None


def load_pipeline(entry: ModelEntry, dtype: torch.dtype) -> DiffusionPipeline:
    """The entry's base pipeline on the CPU, read from disk without network access."""
    cls = PIPELINES[(entry.family, entry.variant)]
    extra = NO_SAFETY_CHECKER if entry.family == "sd15" else {}
    with warnings.catch_warnings():
        # Newer diffusers call it `dtype`; `torch_dtype` works with every version this server supports.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        if entry.format == "diffusers":
            return cls.from_pretrained(
                entry.path,
                torch_dtype=dtype,
                use_safetensors=True,
                local_files_only=True,
                variant=weights_variant(entry.path),
                **extra,
            )
        return cls.from_single_file(
            str(entry.path), config=str(config_dir(entry)), local_files_only=True, torch_dtype=dtype, **extra
        )


class PipelineCache:
    """Resident pipelines by model, least recently used first.

    `on_broken(name, reason)` is told when a model fails to load (pass `Registry.mark_broken`),
    so the model list shows it as refused instead of offering it again.
    """

    def __init__(
        self,
        device: torch.device,
        dtype: torch.dtype,
        capacity: int = 1,
        on_broken: Callable[[str, str], None] | None = None,
    ):
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.device = device
        self.dtype = dtype
        self.capacity = capacity
        self.on_broken = on_broken
        self.step_costs = interrupts.StepCosts()
        self._pipes: OrderedDict[tuple[str, Path], DiffusionPipeline] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> DiffusionPipeline:
        """The model's base pipeline, resident on the device; loads it (and frees another) when needed."""
        key = (entry.name, entry.path)
        with self._lock:
            pipe = self._pipes.get(key)
            if pipe is not None:
                self._pipes.move_to_end(key)
                return pipe
            # Free before loading: two models at once may not fit.
            while len(self._pipes) >= self.capacity:
                self._evict()
            pipe = self._load(entry)
            self._pipes[key] = pipe
            return pipe

    def _load(self, entry: ModelEntry) -> DiffusionPipeline:
        log.info("loading %s (%s, %s %s) on %s", entry.name, entry.format, entry.family, entry.variant, self.device)
        try:
            pipe = load_pipeline(entry, self.dtype).to(self.device)
        except Exception as exc:
            # Not a broken model: the CPU and MPS allocators fail with a plain RuntimeError.
            if is_out_of_memory(exc):
                self.free_memory()
                raise OutOfMemory(f"not enough memory to load {entry.name} on {self.device}", "model") from exc
            log.exception("%s could not be loaded from %s", entry.name, entry.path)
            reason = short_reason(exc, entry)
            if self.on_broken is not None:
                self.on_broken(entry.name, f"could not be loaded: {reason}")
            raise ModelBroken(f"{entry.name} could not be loaded: {reason}", "model") from exc
        pipe.set_progress_bar_config(disable=True)
        interrupts.install(pipe, entry.name, str(self.device), self.step_costs)
        return pipe

    def _evict(self) -> None:
        (name, _), pipe = self._pipes.popitem(last=False)
        log.info("freeing %s", name)
        del pipe
        self.free_memory()

    def free_memory(self) -> None:
        """Return memory that dead tensors still hold (after an eviction or an out-of-memory failure)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps":
            torch.mps.empty_cache()


def short_reason(exc: BaseException, entry: ModelEntry) -> str:
    """One line for the client: the error's first line, without the server's paths."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = text.replace(str(entry.path), entry.name)
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 1] + "…"
    return text
