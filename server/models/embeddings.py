"""Textual-inversion embeddings, loaded into a pipeline's tokenizer(s) and text encoder(s) on first
mention and kept there: a prompt names one by its file name, as in A1111."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from ..errors import ModelBroken
from .entry import ModelEntry

log = logging.getLogger(__name__)


def load(pipe: DiffusionPipeline, entry: ModelEntry, on_broken: Callable[[str, str], None]) -> str:
    """`load_embedding`, with a failure logged, told to `on_broken(name, reason)` (pass the registry's
    `mark_broken` for kind "embedding") and raised as ModelBroken about the prompt."""
    try:
        return load_embedding(pipe, entry)
    except Exception as exc:
        log.exception("embedding %s could not be loaded from %s", entry.name, entry.path)
        reason = f"could not be loaded: {type(exc).__name__}"
        on_broken(entry.name, reason)
        raise ModelBroken(f"embedding {entry.name} {reason}", "prompt") from exc


def embedding_token(entry: ModelEntry) -> str:
    """The token an embedding's vectors are loaded under: lower-case (CLIP's tokenizer lower-cases
    text before matching added tokens) and unlike anything typed, so no word is taken for it."""
    return f"<ti-{entry.fingerprint()[:12]}>"


def load_embedding(pipe: DiffusionPipeline, entry: ModelEntry) -> str:
    """Load `entry` into `pipe`'s tokenizer(s) and text encoder(s) unless there already; returns the
    text standing for it in a prompt (one token per vector)."""
    token = embedding_token(entry)
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    tensors: dict[str, torch.Tensor] | None = None
    for index, (tokenizer, text_encoder) in enumerate(pairs):
        if vector_count(tokenizer, token):
            continue
        tensors = tensors if tensors is not None else load_file(str(entry.path))
        vectors = embedding_vectors(tensors, index, len(pairs))
        log.info("loading embedding %s from %s", entry.name, entry.path)
        pipe.load_textual_inversion(vectors, token=token, tokenizer=tokenizer, text_encoder=text_encoder)
    count = vector_count(pipe.tokenizer, token)
    return " ".join([token] + [f"{token}_{i}" for i in range(1, count)])


def embedding_vectors(tensors: dict[str, torch.Tensor], index: int, encoders: int) -> torch.Tensor:
    """The vectors for text encoder `index`: SDXL files hold `clip_l` and `clip_g`; SD1.5 files
    `emb_params` (kohya), `string_to_param.*` (A1111) or a single tensor (diffusers)."""
    if encoders == 2:
        return tensors[("clip_l", "clip_g")[index]]
    if "emb_params" in tensors:
        return tensors["emb_params"]
    a1111 = sorted(k for k in tensors if k.startswith("string_to_param"))
    return tensors[a1111[0] if a1111 else next(iter(tensors))]


def vector_count(tokenizer: Any, token: str) -> int:
    """How many vectors of `token` the tokenizer holds (`token`, `token_1`, ...); 0 when not loaded."""
    added = tokenizer.get_added_vocab()
    count = 0
    while (token if count == 0 else f"{token}_{count}") in added:
        count += 1
    return count
