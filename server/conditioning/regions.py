"""Regional prompts in one UNet pass per step, by restricting each region's tokens to its mask.

The text embeddings of all prompts are concatenated along the token axis: the global prompt
first, then each region's (conditioner.py lays them out). In every cross-attention layer, and
only there, an additive bias keeps a region's tokens away from queries outside its mask:
`log(coverage)`, so 0 inside, -10000 outside, and a soft edge in between. The global prompt's
tokens attend everywhere. The masks are pooled to each resolution the UNet attends at
(coverage.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from shared.crop import Rect
from shared.messages import Region

from ..errors import Unsupported
from ..models import attention, interrupts
from .coverage import Coverage, latent_mask

OUTSIDE = -10000.0
# Memory-efficient attention kernels want the bias's rows aligned to this many elements.
ALIGN = 8


def latent_masks(regions: Sequence[Region], frame: Rect, latent_size: tuple[int, int]) -> torch.Tensor:
    """Each region's coverage over `frame` (canvas coordinates: the generated area), at latent size.
    Returns [regions, height, width] in 0..1."""
    return torch.stack([latent_mask(region.mask, f"regions[{i}].mask", frame, latent_size)
                        for i, region in enumerate(regions)])


@dataclass
class Restriction(Coverage):
    """Region masks and the token span of each region in the concatenated prompt."""

    spans: list[tuple[int, int]]  # [start, end) token index of each region
    tokens: int  # total tokens: global + all regions

    def bias(self, queries: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The additive attention bias for a layer with `queries` positions: [1, 1, queries, tokens]."""
        return self.cached(("bias", queries, dtype, device), lambda: self._make_bias(queries, dtype, device))

    def _make_bias(self, queries: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        per_region = torch.log(self.pooled(queries)).clamp(min=OUTSIDE)
        padded = math.ceil(self.tokens / ALIGN) * ALIGN
        bias = torch.zeros(queries, padded)
        for (start, end), row in zip(self.spans, per_region, strict=True):
            bias[:, start:end] = row[:, None]
        # Sliced from an aligned buffer so the fast kernels accept it without copying.
        return bias.to(device=device, dtype=dtype)[None, None, :, : self.tokens]


class RegionalCrossAttention:
    """Cross-attention with the regions' bias; the rest of the attention module is used as is."""

    def __init__(self, restriction: Restriction):
        self.restriction = restriction

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs) -> torch.Tensor:
        bias = self.restriction.bias(hidden_states.shape[1], hidden_states.dtype, hidden_states.device)
        return attention.attend(attn, hidden_states, encoder_hidden_states, bias=bias, between=interrupts.checkpoint)


@contextmanager
def restricted(unet: torch.nn.Module, restriction: Restriction | None) -> Iterator[None]:
    """Within the block, `unet`'s cross-attention layers honour `restriction` (nothing when None)."""
    if restriction is None:
        yield
        return
    original = unet.attn_processors
    modules = dict(unet.named_modules())
    processors = {}
    for name, processor in original.items():
        module = modules[name.removesuffix(".processor")]
        if name.endswith("attn2.processor"):
            if module.group_norm is not None or module.spatial_norm is not None or module.norm_cross:
                raise Unsupported("regional prompts do not work with this model's attention", "regions")
            processor = RegionalCrossAttention(restriction)
        processors[name] = processor
    unet.set_attn_processor(processors)
    # A UNet that pools the prompt into its timestep embedding (the demo model) would otherwise pool
    # every region's words too, and paint them everywhere: it pools the global prompt only.
    pooled = None
    if getattr(unet.config, "addition_embed_type", None) == "text":
        global_tokens = restriction.spans[0][0]
        pooled = unet.add_embedding.register_forward_pre_hook(lambda _, args: (args[0][:, :global_tokens],))
    try:
        yield
    finally:
        unet.set_attn_processor(original)
        if pooled is not None:
            pooled.remove()

