"""Running out of device memory during a job: recognise it and tell the artist what to change."""

from __future__ import annotations

import torch

from shared.messages import Generate

from ..errors import OutOfMemory

# Allocators that fail with a plain RuntimeError say so in its text: the CPU allocator
# ("can't allocate memory") and Apple's MPS backend ("MPS backend out of memory").
_MESSAGES = ("out of memory", "can't allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in _MESSAGES)


def out_of_memory_error(request: Generate, device: torch.device) -> OutOfMemory:
    """The error a job that ran out of memory ends with: what was asked for and what to try."""
    images = f"{request.batch_size} images" if request.batch_size > 1 else "an image"
    size = f" at {request.width}x{request.height}" if request.width and request.height else ""
    where = "the GPU" if device.type in ("cuda", "mps") else "this computer"
    others = "close other applications that use the GPU" if where == "the GPU" else "close other applications"
    advice = "try a smaller size" + (", fewer images at once" if request.batch_size > 1 else "") + f" or {others}"
    return OutOfMemory(f"{where} ran out of memory generating {images}{size}: {advice}, then try again")
