"""A request's prompts as text embeddings, the way diffusers' pipelines take them.

Per job: the LoRAs the prompts name are activated (loras.py), the textual-inversion embeddings
they mention are loaded, each text is encoded by compel (weights; prompts longer than 77 tokens
in chunks of 77, concatenated, never truncated), and regional prompts are laid out after the
global one (regions.py restricts them to their masks).

Text embeddings are kept in a bounded cache keyed by (model, LoRA set, syntax, text, embeddings
used), one entry per text, so an unchanged negative prompt or region is not encoded again when the
positive prompt changes; `EmbeddingCache.hits` / `.misses` count lookups.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from compel import Compel, ReturnedEmbeddingsType
from compel.embeddings_provider import SplitLongTextMode
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from shared.crop import Rect
from shared.errors import MODEL_BROKEN, ProtocolError, bad_request
from shared.messages import Generate

from . import prompts, regions
from .loras import LoraSlots, Wanted
from .prompts import Parsed
from .registry import ModelEntry, Registry

log = logging.getLogger(__name__)

CACHE_SIZE = 64
FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}


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

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class Prompting:
    """What a job's prompts became."""

    arguments: dict[str, Any]  # prompt_embeds, negative_prompt_embeds (+ pooled ones for SDXL)
    restriction: regions.Restriction | None  # regional prompts, for regions.restricted()
    info: dict[str, Any]  # prompt_syntax, loras, embeddings: for the result's info


def texts(request: Generate) -> Iterator[tuple[str, str]]:
    """(field, text) of every prompt in the request."""
    yield "prompt", request.prompt
    yield "negative_prompt", request.negative_prompt
    for i, region in enumerate(request.regions):
        yield f"regions[{i}].prompt", region.prompt
        yield f"regions[{i}].negative_prompt", region.negative_prompt


class Conditioner:
    def __init__(self, registry: Registry, cache_size: int = CACHE_SIZE, lora_capacity: int = 4):
        self.registry = registry
        self.cache = EmbeddingCache(cache_size)
        self.loras = LoraSlots(lora_capacity, lambda name, reason: registry.mark_broken(name, reason, kind="lora"))

    def check(self, request: Generate, family: str | None) -> None:
        """Syntax and LoRA names of every prompt, before the job is queued."""
        for field, text in texts(request):
            for tag in prompts.parse(text, request.prompt_syntax, field).loras:
                self._lora(tag.name, family, field)

    def _lora(self, name: str, family: str | None, field: str) -> ModelEntry:
        entry = self.registry.get(name, kind="lora", field=field)
        if family and entry.family and entry.family != family:
            raise bad_request(field, f"LoRA {name!r} is for {FAMILY_NAMES[entry.family]} models; "
                                     f"this model is {FAMILY_NAMES[family]}")
        return entry

    def prepare(self, pipe: DiffusionPipeline, model: ModelEntry, request: Generate, frame: Rect,
                size: tuple[int, int]) -> Prompting:
        """Activate LoRAs, load embeddings and encode every prompt of `request` for `pipe`.

        `frame` is the generated area in canvas coordinates and `size` the generation size (for
        regions' masks).
        """
        parsed = {field: prompts.parse(text, request.prompt_syntax, field) for field, text in texts(request)}
        wanted = self._wanted(parsed, model.family)
        applied = self.loras.activate(pipe, wanted)
        used = self._embeddings(pipe, model, parsed.values())
        encoder = _Encoder(pipe, self.cache, (model.name, str(model.path)),
                           tuple((w.adapter, w.weight) for w in wanted), used)

        zero_negative = bool(pipe.config.get("force_zeros_for_empty_prompt", False))
        positive = encoder(parsed["prompt"])
        negative = encoder(parsed["negative_prompt"], zero_negative)
        # The global prompt first, then each region's; positive and negative at equal lengths.
        pairs = [encoder.pair(positive, negative)]
        for i in range(len(request.regions)):
            region_negative = parsed[f"regions[{i}].negative_prompt"]
            # Without its own negative a region repeats the global one: the same keys twice
            # attend exactly like once, so the unconditional pass is unchanged there.
            own = encoder(region_negative, zero_negative) if region_negative.text.strip() else negative
            pairs.append(encoder.pair(encoder(parsed[f"regions[{i}].prompt"]), own))
        offsets = list(itertools.accumulate((part.shape[1] for part, _ in pairs), initial=0))
        arguments: dict[str, Any] = {
            "prompt_embeds": torch.cat([part for part, _ in pairs], dim=1),
            "negative_prompt_embeds": torch.cat([part for _, part in pairs], dim=1),
        }
        if positive.pooled is not None:
            arguments["pooled_prompt_embeds"] = positive.pooled
            arguments["negative_pooled_prompt_embeds"] = negative.pooled
        restriction = None
        if request.regions:
            scale = pipe.vae_scale_factor
            masks = regions.latent_masks(request.regions, frame, (size[0] // scale, size[1] // scale))
            restriction = regions.Restriction(masks, list(zip(offsets[1:-1], offsets[2:], strict=True)),
                                              offsets[-1])
        info = {"prompt_syntax": request.prompt_syntax, "loras": applied,
                "embeddings": sorted(entry.name for entry, _ in used)}
        return Prompting(arguments, restriction, info)

    def _wanted(self, parsed: dict[str, Parsed], family: str | None) -> list[Wanted]:
        """Every LoRA named anywhere, once; a LoRA named twice gets the sum of its weights."""
        weights: dict[str, float] = {}
        entries: dict[str, ModelEntry] = {}
        for field, prompt in parsed.items():
            for tag in prompt.loras:
                entries.setdefault(tag.name, self._lora(tag.name, family, field))
                weights[tag.name] = weights.get(tag.name, 0.0) + tag.weight
        return [Wanted(entries[name], weight) for name, weight in weights.items()]

    def _embeddings(self, pipe: DiffusionPipeline, model: ModelEntry,
                    parsed: Iterable[Parsed]) -> list[tuple[ModelEntry, str]]:
        """The embeddings the prompts mention, loaded into `pipe`, with the text that stands for each."""
        available = {e.name.lower(): e for e in self.registry.entries()
                     if e.kind == "embedding" and not e.refused and e.family == model.family}
        mentioned: set[str] = set()
        for prompt in parsed:
            mentioned |= prompts.names_in(prompt.text, list(available))
        used = []
        for name in sorted(mentioned):
            entry = available[name]
            try:
                used.append((entry, load_embedding(pipe, entry)))
            except Exception as exc:
                log.exception("embedding %s could not be loaded from %s", entry.name, entry.path)
                reason = f"could not be loaded: {type(exc).__name__}"
                self.registry.mark_broken(entry.name, reason, kind="embedding")
                raise ProtocolError(MODEL_BROKEN, f"embedding {entry.name} {reason}", "prompt") from exc
        return used


class _Encoder:
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


# --- textual-inversion embeddings ----------------------------------------------------------------


def embedding_token(entry: ModelEntry) -> str:
    """The token an embedding's vectors are loaded under: lower-case (CLIP's tokenizer lower-cases
    text before matching added tokens) and unlike anything typed, so no word is taken for it."""
    try:
        stat = entry.path.stat()
        identity = f"{entry.path}:{stat.st_mtime_ns}:{stat.st_size}"
    except OSError:
        identity = str(entry.path)
    return f"<ti-{hashlib.sha1(identity.encode()).hexdigest()[:12]}>"


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
