"""Cheap progress previews: a fixed linear map from latents to RGB, no VAE decode."""

from __future__ import annotations

import torch

# Per-family least-squares fits of RGB from the 4 latent channels (rows: latent channel,
# columns: R, G, B), the usual approximation used by painting tools' previews.
_FACTORS = {
    "sd15": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
              [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
              [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
}
MAX_SIDE = 256


def latents_to_rgba(latents: torch.Tensor, family: str) -> tuple[int, int, bytes]:
    """(width, height, rgba8 bytes) of the first image of a latent batch, at most MAX_SIDE wide."""
    factors, bias = _FACTORS.get(family, _FACTORS["sd15"])
    latent = latents[0, :4].detach().float().cpu()
    step = max(1, -(-max(latent.shape[1:]) // MAX_SIDE))
    latent = latent[:, ::step, ::step]
    rgb = torch.einsum("chw,cr->hwr", latent, torch.tensor(factors)) + torch.tensor(bias)
    rgb = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8)
    alpha = torch.full((*rgb.shape[:2], 1), 255, dtype=torch.uint8)
    pixels = torch.cat([rgb, alpha], dim=2).contiguous()
    return pixels.shape[1], pixels.shape[0], pixels.numpy().tobytes()
