"""A request's prompts as the text embeddings diffusers' pipelines take, for one job.

Per job: the LoRAs the prompts name are activated (models/loras.py), the textual-inversion
embeddings they mention are loaded (models/embeddings.py), each text is encoded (encoder.py), and
regional prompts are laid out after the global one, each restricted to its mask (regions.py). The
masks come from the caller, which knows where the picture lies on the canvas.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline

from shared.messages import Generate

from ..errors import BadInput
from ..models import embeddings
from ..models.entry import ModelEntry
from ..models.loras import LoraSlots, Wanted
from ..models.registry import Registry
from . import prompts, regions
from .encoder import CACHE_SIZE, EmbeddingCache, TextEncoder
from .prompts import Parsed

FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}
# Reading every prompt of a request (up to 34 of them) takes milliseconds; a request whose prompts take
# longer than this is refused `too_large`, whatever pyparsing or a regular expression would do with it.
CHECK_BUDGET = 2.0


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
        with prompts.time_budget(CHECK_BUDGET):
            for field, text in texts(request):
                for tag in prompts.parse(text, request.prompt_syntax, field).loras:
                    self._lora(tag.name, family, field)

    def _lora(self, name: str, family: str | None, field: str) -> ModelEntry:
        entry = self.registry.get(name, kind="lora", field=field)
        if family and entry.family and entry.family != family:
            raise BadInput(f"LoRA {name!r} is for {FAMILY_NAMES[entry.family]} models; "
                           f"this model is {FAMILY_NAMES[family]}", field)
        return entry

    def prepare(self, pipe: DiffusionPipeline, model: ModelEntry, request: Generate,
                region_masks: torch.Tensor | None = None) -> Prompting:
        """Activate LoRAs, load embeddings and encode every prompt of `request` for `pipe`.

        `region_masks` are the request's regions over the generated picture at latent size
        (regions.latent_masks), one plane per region; needed when the request has regions.
        """
        parsed = {field: prompts.parse(text, request.prompt_syntax, field) for field, text in texts(request)}
        wanted = self._wanted(parsed, model.family)
        applied = self.loras.activate(pipe, wanted)
        used = self._embeddings(pipe, model, parsed.values())
        encoder = TextEncoder(pipe, self.cache, (model.name, str(model.path)),
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
            spans = list(zip(offsets[1:-1], offsets[2:], strict=True))
            restriction = regions.Restriction(region_masks, spans, offsets[-1])
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
        return [(available[name], embeddings.load(pipe, available[name], self._embedding_broken))
                for name in sorted(mentioned)]

    def _embedding_broken(self, name: str, reason: str) -> None:
        self.registry.mark_broken(name, reason, kind="embedding")
