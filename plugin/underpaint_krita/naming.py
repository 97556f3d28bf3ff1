"""Layer names: artists find results in the layer stack by their prompt and seed."""

from __future__ import annotations

import re

PREVIEW = "[Preview]"
GENERATED = "[Generated]"
LIVE = "[Live]"
CONTROL = "[Control]"
REFERENCE = "[Reference]"
PROMPT_CHARS = 40
ELLIPSIS = "…"
LORA_TAG = re.compile(r"<(?:lora|lyco):[^<>]*>", re.IGNORECASE)  # as the server reads them (prompts.py)


def short_prompt(prompt: str, limit: int = PROMPT_CHARS) -> str:
    """The prompt on one line without its LoRA tags (a style may add several), cut at a word
    boundary where one is near, with an ellipsis."""
    text = " ".join(LORA_TAG.sub(" ", prompt).split())
    if not text:
        return "(no prompt)"
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + ELLIPSIS


def preview_name(prompt: str, note: str = "") -> str:
    """The preview layer's name; `note` says how the picture was made where that matters (detail)."""
    return f"{PREVIEW} {short_prompt(prompt)}" + (f" ({note})" if note else "")


def detail_note(info: dict) -> str:
    """What a result's `info` says about a canvas larger than the model's native area (docs/upscale.md)."""
    return {"fast": "enlarged: Detail fast", "full": "full resolution"}.get(info.get("detail"), "")


def upscaled_name(prompt: str, scale: int) -> str:
    return f"{GENERATED} upscaled x{scale}" + (f" {short_prompt(prompt)}" if prompt.strip() else "")


def generated_name(prompt: str, seed: int) -> str:
    return f"{GENERATED} {short_prompt(prompt)} ({seed})"


def live_name(prompt: str, seed: int) -> str:
    return f"{LIVE} {short_prompt(prompt)} ({seed})"


def control_name(kind: str) -> str:
    """A control image the server made from the canvas (`preprocess`), by its kind as the protocol names it."""
    return f"{CONTROL} {kind}"


def reference_name(file_name: str) -> str:
    """The name of the hidden layer a picture file is imported into as a reference."""
    return f"{REFERENCE} {file_name}"


def is_preview(name: str) -> bool:
    return name.startswith(PREVIEW + " ")
