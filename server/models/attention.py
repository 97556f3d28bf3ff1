"""Attention computed in slices of queries, with a call between slices.

At large sizes one self-attention call is most of a denoising step: at 1024² the demo model's
top-level attention takes 3 to 5 s on a CPU, at 4096² minutes, and a job cannot be cancelled inside
one kernel call. Rows of attention are independent, so the same result comes from slices of the
queries against all keys; between slices a job's cancel is checked (interrupts.py), and only one
slice's scores exist at a time. Small attention calls, most of them, are left to the processor the
model already had.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

Between = Callable[[], None]

# Multiply-adds of query x key products in one slice: about a tenth of a second on a CPU core. A GPU
# does that much in microseconds, where more slices would only add kernel launches.
SLICE_WORK = {"cpu": 2**31}
DEVICE_SLICE_WORK = 2**37


def attend(attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
           bias: torch.Tensor | None = None, temb: torch.Tensor | None = None,
           between: Between | None = None) -> torch.Tensor:
    """What diffusers' AttnProcessor2_0 computes (with `bias` added to the scores, broadcast as
    [1 or batch, 1 or heads, queries, keys]), the queries taken a slice at a time, calling `between`
    before each slice."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    spatial = hidden_states.shape if hidden_states.ndim == 4 else None
    if spatial is not None:
        batch, channels, height, width = spatial
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    batch, queries, _ = hidden_states.shape
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if encoder_hidden_states is None:
        context = hidden_states
    else:
        context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
    query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
    head_dim = key.shape[-1] // attn.heads

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

    query, key, value = heads(query), heads(key), heads(value)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    step = slice_length(query, key)
    if step >= queries:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
    else:
        out = torch.empty_like(query)
        for start in range(0, queries, step):
            if between is not None:
                between()
            rows = slice(start, start + step)
            out[:, :, rows] = F.scaled_dot_product_attention(
                query[:, :, rows], key, value, attn_mask=None if bias is None else bias[:, :, rows])
    out = out.transpose(1, 2).reshape(batch, queries, attn.heads * head_dim).to(query.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if spatial is not None:
        out = out.transpose(-1, -2).reshape(spatial)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def slice_length(query: torch.Tensor, key: torch.Tensor) -> int:
    """Queries per slice: as many as keep a slice's work within its device's SLICE_WORK."""
    batch, heads, queries, head_dim = query.shape
    per_query = batch * heads * key.shape[-2] * head_dim
    return max(1, SLICE_WORK.get(query.device.type, DEVICE_SLICE_WORK) // per_query)


class SlicedAttention:
    """An attention processor that slices large calls of diffusers' standard processor (`original`)
    and leaves every other call, and every other kind of processor, to `original`."""

    def __init__(self, original: object, between: Between):
        self.original = original
        self.between = between

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if (type(self.original) is AttnProcessor2_0 and attention_mask is None and not kwargs
                and self._large(attn, hidden_states, encoder_hidden_states)):
            return attend(attn, hidden_states, encoder_hidden_states, temb=temb, between=self.between)
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

    @staticmethod
    def _large(attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> bool:
        queries = hidden_states.shape[-2] * hidden_states.shape[-1] if hidden_states.ndim == 4 \
            else hidden_states.shape[1]
        keys = queries if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        work = hidden_states.shape[0] * queries * keys * attn.inner_dim
        return work > SLICE_WORK.get(hidden_states.device.type, DEVICE_SLICE_WORK)
