"""Pictures to the UNet's latents and back, outside the pipelines: the start picture of an inpaint
encoded once, and the fast decode of live frames with a tiny autoencoder (models/tiny_decoders.py)."""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch


def encode(pipe: Any, picture: PIL.Image.Image) -> torch.Tensor:
    """The scaled latents of `picture` (the distribution's mode: no sampling noise), as the UNet takes them."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(picture)
    dtype = vae.dtype
    # SDXL's VAE overflows in float16; its config asks for float32 (as diffusers' pipelines do).
    upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    try:
        if upcast:
            vae.to(torch.float32)
        with torch.no_grad():
            latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    finally:
        if upcast:
            vae.to(dtype)
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean, device=latents.device).view(1, -1, 1, 1)
        std = torch.tensor(std, device=latents.device).view(1, -1, 1, 1)
        latents = (latents - mean) * config.scaling_factor / std
    else:
        latents = latents * config.scaling_factor
    return latents.to(pipe.unet.dtype)


@torch.no_grad()
def decode(decoder: torch.nn.Module, latents: torch.Tensor) -> list[PIL.Image.Image]:
    """Latents of the UNet's (scaled) space to pictures, by a tiny autoencoder."""
    latents = latents.to(decoder.device, decoder.dtype) / decoder.config.scaling_factor
    pixels = decoder.decode(latents).sample
    pixels = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [PIL.Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in pixels]
