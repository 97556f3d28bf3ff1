"""A tiny encoder with a narrow VAE decoder: the kind of the demo model's tiny autoencoder.

TAESD (diffusers' `AutoencoderTiny`) is convolutions both ways. Its encoder suits any latent space,
but its decoder follows a VAE decoder that normalises over the whole picture (group norms, as SD's
and the demo model's have) only roughly: there the colour of each patch depends on the statistics of
the whole picture, which a stack of local convolutions never sees. Trained against the demo model's
VAE, such a decoder's previews and the full decode read different colours in one live frame in five
(docs/demo-model.md).

So this kind keeps `AutoencoderTiny`'s encoder (convolutions alone, so a part of a canvas can be
encoded by itself: imaging/changes.py) and has a decoder of `AutoencoderKL`'s kind, group norms
included: at the lowest resolution as wide as the VAE's, whose level it copies, and narrower towards
full resolution, where a decoder spends its time.

It is a diffusers model folder (a config.json naming this class, safetensors weights), loaded by
models/tiny_autoencoders.py. It is called as `AutoencoderTiny` is: pixels in [-1, 1];
`encode(pixels).latents` times `config.scaling_factor` are the UNet's latents, `decode(latents /
scaling_factor).sample` the picture.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTinyOutput
from diffusers.models.autoencoders.vae import DecoderOutput, EncoderTiny
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, UpDecoderBlock2D
from torch import nn


class AutoencoderTinyKL(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 4,
        encoder_block_out_channels: tuple[int, ...] = (16, 16, 16, 16),
        num_encoder_blocks: tuple[int, ...] = (1, 1, 1, 1),
        decoder_block_out_channels: tuple[int, ...] = (8, 16, 32, 64),
        decoder_norm_groups: tuple[int, ...] = (4, 4, 4, 8),
        layers_per_block: int = 1,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        self.encoder = EncoderTiny(in_channels, latent_channels, tuple(num_encoder_blocks),
                                   tuple(encoder_block_out_channels), act_fn="relu")
        # AutoencoderKL's, so that a VAE's lowest decoder level copies over as it is.
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.decoder = NarrowDecoder(latent_channels, out_channels, tuple(decoder_block_out_channels),
                                     tuple(decoder_norm_groups), layers_per_block)

    def encode(self, pixels: torch.Tensor) -> AutoencoderTinyOutput:
        return AutoencoderTinyOutput(latents=self.encoder(pixels))

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(sample=self.decoder(self.post_quant_conv(latents)))


class NarrowDecoder(nn.Module):
    """diffusers' VAE `Decoder` (no attention), with its parts' names, but group norms of a number of
    its own at each level: a level narrower than the VAE's keeps as many channels in a group as the
    VAE's did there. With the VAE's 8 groups, an 8-channel level normalises each channel alone over the
    picture, and the last convolution no longer sees what colour the picture is on the whole."""

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, ...], groups: tuple[int, ...],
                 layers_per_block: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[-1], 3, padding=1)
        self.mid_block = UNetMidBlock2D(in_channels=widths[-1], temb_channels=None, resnet_eps=1e-6,
                                        resnet_groups=groups[-1], add_attention=False)
        levels = list(reversed(range(len(widths))))  # lowest resolution first
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock2D(in_channels=widths[min(level + 1, len(widths) - 1)], out_channels=widths[level],
                             num_layers=layers_per_block + 1, resnet_eps=1e-6, resnet_groups=groups[level],
                             add_upsample=level > 0, temb_channels=None)
            for level in levels)
        self.conv_norm_out = nn.GroupNorm(groups[0], widths[0], eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        sample = self.mid_block(self.conv_in(latents))
        for block in self.up_blocks:
            sample = block(sample)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))
