"""Prompt texts -> text embeddings through compel, with a bounded cache of what was encoded.

Weights follow the prompt syntax (prompts.py); prompts longer than 77 tokens are encoded in chunks
of 77, concatenated, never truncated. The cache is keyed by (model, LoRA set, syntax, text,
embeddings used), one entry per text, so an unchanged negative prompt or region is not encoded
again when the positive prompt changes; `EmbeddingCache.hits` / `.misses` count lookups.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from compel import Compel, ReturnedEmbeddingsType
from compel.embeddings_provider import SplitLongTextMode
from diffusers import DiffusionPipeline

from ..models.entry import ModelEntry
from . import prompts
from .prompts import Parsed

CACHE_SIZE = 64


@dataclass(frozen=True)
class Encoded:
    embeds: torch.Tensor  # [1, tokens, width]; tokens a multiple of 77
    pooled: torch.Tensor | None  # [1, width] for SDXL
    zero: bool = False  # an empty negative prompt on a model trained with zeros for it


class EmbeddingCache:
    """The last `capacity` texts' embeddings, least recently used dropped first."""

    def __init__(self, capacity: int = CACHE_SIZE):
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, Encoded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Encoded]) -> Encoded:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        made = make()
        with self._lock:
            self._entries[key] = made
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return made

    def __len__(self) -> int:
        return len(self._entries)



class TextEncoder:
    """Texts of one job -> Encoded, through the cache; compel is set up only on a miss."""

    def __init__(self, pipe: DiffusionPipeline, cache: EmbeddingCache, model: tuple[str, str],
                 loras: tuple[tuple[str, float], ...], embeddings: list[tuple[ModelEntry, str]]):
        self.pipe = pipe
        self.cache = cache
        self.model = model
        self.loras = loras
        self.replacements = {entry.name.lower(): text for entry, text in embeddings}
        self._compels: list[Compel] | None = None
        self._empty: Encoded | None = None

    def __call__(self, prompt: Parsed, zero_when_empty: bool = False) -> Encoded:
        if zero_when_empty and not prompt.text.strip():
            # SDXL was trained with zeros, not an encoded "", for an empty negative prompt.
            like = self.empty
            pooled = None if like.pooled is None else torch.zeros_like(like.pooled)
            return Encoded(torch.zeros_like(like.embeds), pooled, zero=True)
        mentioned = prompts.names_in(prompt.text, list(self.replacements))
        key = (self.model, self.loras, prompt.syntax, prompt.text,
               tuple(sorted((name, self.replacements[name]) for name in mentioned)))
        return self.cache.get(key, lambda: self._encode(prompt.conjunction, mentioned))

    @property
    def empty(self) -> Encoded:
        if self._empty is None:
            self._empty = self(prompts.parse("", "a1111"))
        return self._empty

    def pair(self, positive: Encoded, negative: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """Both embeddings at the same length, the shorter padded with empty-prompt chunks."""
        length = max(positive.embeds.shape[1], negative.embeds.shape[1])
        return self._pad(positive, length), self._pad(negative, length)

    def _pad(self, encoded: Encoded, length: int) -> torch.Tensor:
        embeds = encoded.embeds
        if embeds.shape[1] == length:
            return embeds
        chunk = torch.zeros_like(self.empty.embeds) if encoded.zero else self.empty.embeds
        repeats = (length - embeds.shape[1]) // chunk.shape[1]
        return torch.cat([embeds, chunk.repeat(1, repeats, 1)], dim=1)

    def _encode(self, conjunction: Any, mentioned: set[str]) -> Encoded:
        conjunction = prompts.substitute(conjunction, {n: self.replacements[n] for n in mentioned})
        compels = self._compels = self._compels or make_compels(self.pipe)
        with torch.no_grad():
            parts = [c.build_conditioning_tensor_for_conjunction(conjunction)[0] for c in compels]
            pooled = None
            if len(compels) == 2:
                provider = compels[1].conditioning_provider
                pooled = provider.get_pooled_embeddings([prompts.plain_text(conjunction)])
        return Encoded(torch.cat(parts, dim=-1), pooled)


def make_compels(pipe: DiffusionPipeline) -> list[Compel]:
    """compel over the pipeline's text encoder(s): SD1.5's last hidden states; SDXL's two
    encoders' penultimate hidden states, unnormalized, as SDXL was trained (no final_layer_norm,
    which transformers >= 5.6 no longer exposes there)."""
    # PHRASES: a long prompt is cut at the last comma or full stop before 75 tokens, like A1111.
    common = {"truncate_long_prompts": False, "split_long_text_mode": SplitLongTextMode.PHRASES}
    if getattr(pipe, "text_encoder_2", None) is None:
        return [Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, **common)]
    penultimate = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
    return [
        Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, returned_embeddings_type=penultimate,
               **common),
        Compel(tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2, returned_embeddings_type=penultimate,
               requires_pooled=True, **common),
    ]
