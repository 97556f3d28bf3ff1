"""LoRAs and embeddings as the prompt names them: which of them fit a model, how each is shown in
the picker (its family and trigger words) and what goes into the prompt for it.

Krita-free.
"""

from __future__ import annotations

from shared.messages import ModelInfo

from .styles import LORA_STRENGTH

KINDS = ("lora", "embedding")
FAMILY_LABELS = {"sd15": "SD1.5", "sdxl": "SDXL"}


def fitting(models: list[ModelInfo], family: str | None) -> list[ModelInfo]:
    """The LoRAs, then the embeddings, for `family` (None: of every family), by name; those whose
    family the server could not tell come last in each kind, as they may fit. Refused ones are kept
    for the picker to show greyed."""
    found = [m for m in models if m.kind in KINDS and (family is None or m.family in (family, None))]
    return sorted(found, key=lambda m: (KINDS.index(m.kind), m.family is None, m.name.lower()))


def label(info: ModelInfo) -> str:
    """`name · SD1.5 · oil, impasto`: the name, the family, the trigger words."""
    parts = [info.name, FAMILY_LABELS.get(info.family or "", info.family or "family unknown")]
    if info.trigger_words:
        parts.append(", ".join(info.trigger_words))
    return " · ".join(parts)


def snippet(info: ModelInfo) -> str:
    """What the prompt gets: a LoRA's tag, an embedding's name (A1111's syntax, docs/prompts.md)."""
    return f"<lora:{info.name}:{LORA_STRENGTH:g}>" if info.kind == "lora" else info.name


def spaced(before: str, after: str, addition: str) -> str:
    """`addition` with a space on either side where it would touch a word of `before` or `after`
    (the prompt's text before and after the cursor)."""
    if before and not before[-1].isspace():
        addition = " " + addition
    if after and not after[0].isspace():
        addition += " "
    return addition
