"""Reference pictures: IP-Adapters' decoupled cross-attention (docs/reference.md).

Each reference picture becomes a few tokens once per job (its image features from a CLIP vision encoder,
cached across live frames, through the adapter's image projection). In every cross-attention layer the
adapter acts in, the layer's queries also attend to the adapter's keys and values of those tokens, and
`strength × that attention` is added to what they read from the text, before the layer's output projection:
what diffusers' IPAdapterAttnProcessor2_0 computes. Here it wraps whatever processor the layer has for the
job (regional prompts' among them), adding its term after the output projection, which is linear: the same
sum. The unconditional half of classifier-free guidance reads the tokens of the unconditional picture.

`style` and `composition` act only in the attention blocks that carry them (InstantStyle), `face` wherever
a face adapter acts; a reference acts at the steps wholly inside its [start, end], and with a mask only
where the mask covers, the mask read at each attention resolution as regions' are and cut to tiles with them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from shared.crop import Rect
from shared.messages import Reference

from ..errors import Unsupported
from ..imaging import payloads
from ..models.entry import ModelEntry
from ..models.ipadapters import Adapter, IPAdapters
from .coverage import Coverage, latent_mask
from .steps import StepCounter, covers

# The attention blocks that carry a picture's style or its composition, as (side, level, attention): `level`
# counts a side's cross-attention blocks from the lowest resolution (0) up, `attention` is the block's
# transformer (None: all of them), each with the share of the strength it gets there. SDXL's are InstantStyle's
# (up_blocks.0.attentions.1 for style, down_blocks.2.attentions.1 for layout); SD1.5's are those of ComfyUI
# IPAdapter plus's "style transfer" and "composition" weight types, its indices read as attention blocks in
# the order the UNet runs them (docs/reference.md says more).
Block = tuple[str, int, int | None]
BLOCKS: dict[tuple[str, str], dict[Block, float]] = {
    ("sdxl", "style"): {("up", 0, 1): 1.0},
    ("sdxl", "composition"): {("down", 0, 1): 1.0},
    ("sd15", "style"): {("down", 1, None): 1.0, ("down", 2, None): 1.0, ("up", 0, 2): 1.0,
                        ("up", 1, None): 1.0, ("up", 2, None): 1.0},
    ("sd15", "composition"): {("down", 0, 0): 0.25, ("down", 0, 1): 1.0},
}
# The A1111 ControlNet extension's module for each encoder, by the width of its hidden states: what its
# infotext names.
MODULES = {1280: "ip-adapter_clip_h", 1664: "ip-adapter_clip_g"}


def cross_attention_layers(unet: torch.nn.Module) -> list[str]:
    """The names of `unet`'s cross-attention processors, in the order IP-Adapter files number them."""
    return [name for name in unet.attn_processors if name.endswith("attn2.processor")]


def block_weights(unet: torch.nn.Module, family: str, mode: str) -> dict[int, float]:
    """Cross-attention layer index -> the share of a reference's strength it gets there in `mode`."""
    layers = cross_attention_layers(unet)
    table = BLOCKS.get((family, mode))
    if table is None:
        return dict.fromkeys(range(len(layers)), 1.0)
    down = [i for i, block in enumerate(unet.down_blocks) if hasattr(block, "attentions")]
    up = [i for i, block in enumerate(unet.up_blocks) if hasattr(block, "attentions")]
    levels = {("down", index): len(down) - 1 - rank for rank, index in enumerate(down)}
    levels |= {("up", index): rank for rank, index in enumerate(up)}
    weights = {}
    for number, name in enumerate(layers):
        parts = name.split(".")
        if parts[0] not in ("down_blocks", "up_blocks"):
            continue
        side, attention = parts[0].removesuffix("_blocks"), int(parts[3])
        level = levels[(side, int(parts[1]))]
        weight = table.get((side, level, attention), table.get((side, level, None)))
        if weight:
            weights[number] = weight
    return weights


@dataclass
class ActiveReference:
    name: str  # the adapter's
    encoder: str
    module: str  # the A1111 ControlNet extension's name for what reads the picture
    mode: str
    strength: float
    start: float
    end: float
    tokens: torch.Tensor  # [2, tokens, width]: the unconditional picture's, then the reference's
    adapter: Adapter
    weights: dict[int, float]  # cross-attention layer index -> share of the strength
    coverage: Coverage | None  # where it acts, over the latent it was placed for
    reused: bool  # its features came from the cache
    _keys_values: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def covers(self, step: int, steps: int) -> bool:
        return covers(step, steps, self.start, self.end)

    def keys_values(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's keys and values of the tokens, [2, tokens, inner width]: made once a job."""
        if layer not in self._keys_values:
            to_k, to_v = self.adapter.layers[layer]
            self._keys_values[layer] = (F.linear(self.tokens, to_k), F.linear(self.tokens, to_v))
        return self._keys_values[layer]


@dataclass
class References(StepCounter):
    """The job's active references, whether the pipeline guides (its batch is then the unconditional half
    followed by the conditional one, as diffusers' pipelines lay it out), and the step it is at."""

    items: list[ActiveReference]
    guided: bool

    def added(self, attn: Any, layer: int, hidden_states: torch.Tensor, steps: int) -> torch.Tensor | None:
        """What the references acting at this step add to cross-attention layer `layer`'s output; None when
        none does."""
        running = [r for r in self.items if layer in r.weights and r.covers(self.step, steps)]
        if not running:
            return None
        batch, queries, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        head_dim = query.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        total = None
        for reference in running:
            keys, values = (self._batched(x, batch) for x in reference.keys_values(layer))
            keys = keys.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            values = values.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            read = F.scaled_dot_product_attention(query, keys, values)
            read = read.transpose(1, 2).reshape(batch, queries, attn.heads * head_dim).to(query.dtype)
            read = read * (reference.strength * reference.weights[layer])
            if reference.coverage is not None:
                read = read * reference.coverage.at(queries, read.dtype, read.device)[0][None, :, None]
            total = read if total is None else total + read
        out = F.linear(total, attn.to_out[0].weight)
        return out / attn.rescale_output_factor

    def _batched(self, pair: torch.Tensor, batch: int) -> torch.Tensor:
        """The unconditional half's rows for the first half of a guided batch, the reference's for the rest."""
        if not self.guided:
            return pair[1:].expand(batch, -1, -1)
        half = batch // 2
        return torch.cat([pair[:1].expand(half, -1, -1), pair[1:].expand(batch - half, -1, -1)])

    def info(self) -> dict[str, Any]:
        return {"references": [{"mode": r.mode, "model": r.name, "encoder": r.encoder, "module": r.module,
                                "strength": r.strength, "start": r.start, "end": r.end,
                                "features_reused": r.reused} for r in self.items]}


class ReferenceAttention:
    """A cross-attention layer's processor for the job (`original`), with what the references add."""

    def __init__(self, original: Any, layer: int, references: References, pipe: Any):
        self.original = original
        self.layer = layer
        self.references = references
        self.pipe = pipe

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        added = self.references.added(attn, self.layer, hidden_states, self.references.total(self.pipe))
        return out if added is None else out + added.to(out.dtype)


def prepare(references: Sequence[Reference], frame: Rect, latent_size: tuple[int, int], checkpoint: ModelEntry,
            unet: torch.nn.Module, guided: bool, adapters: IPAdapters) -> References | None:
    """The request's references with their adapters loaded and their tokens made; masks placed over `frame`
    at `latent_size`. None without any that acts (strength 0 acts on nothing)."""
    layers = len(cross_attention_layers(unet))
    context = unet.config.cross_attention_dim
    active = []
    for i, reference in enumerate(references):
        where = f"reference[{i}]"
        entry, encoder_entry = adapters.choose(reference.mode, checkpoint, reference.model, where)
        if reference.strength == 0:
            continue
        adapter = adapters.adapter(entry, f"{where}.model")
        if len(adapter.layers) != layers or adapter.context_width != context:
            raise Unsupported(f"IP-Adapter {entry.name!r} is not made for {checkpoint.name}: it has "
                              f"{len(adapter.layers)} cross-attention layers of width {adapter.context_width}, the "
                              f"model {layers} of width {context}", f"{where}.model")
        encoder = adapters.encoder(encoder_entry, f"{where}.model")
        picture = payloads.flattened(payloads.to_pil(reference.image, f"{where}.image"))
        what = adapter.feature[0]
        features, reused = adapters.picture_features(encoder, picture, what)
        unconditional, _ = (adapters.picture_features(encoder, None, what) if what == "hidden"
                            else (torch.zeros_like(features), True))
        with torch.no_grad():
            tokens = adapter.projection(torch.cat([unconditional, features]))
        coverage = None
        if reference.mask is not None:
            coverage = Coverage(latent_mask(reference.mask, f"{where}.mask", frame, latent_size)[None])
        module = MODULES.get(encoder.model.config.hidden_size, "ip-adapter_clip_h")
        active.append(ActiveReference(entry.name, encoder_entry.name, module, reference.mode, reference.strength,
                                      reference.start, reference.end, tokens,
                                      adapter, block_weights(unet, str(entry.family), reference.mode), coverage,
                                      reused))
    return References(active, guided) if active else None


@contextmanager
def applied(pipe: Any, references: References | None) -> Iterator[None]:
    """Within the block, `pipe.unet`'s cross-attention layers add what the references read."""
    if references is None:
        yield
        return
    unet = pipe.unet
    original = unet.attn_processors
    cross = {name: number for number, name in enumerate(cross_attention_layers(unet))}
    unet.set_attn_processor({name: ReferenceAttention(processor, cross[name], references, pipe) if name in cross
                             else processor for name, processor in original.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(original)
