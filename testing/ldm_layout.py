"""Diffusers weights renamed to the original (LDM) layout of A1111 / ComfyUI single-file checkpoints.

The inverse of what diffusers' single-file loader does, so that loading a file written here through
`from_single_file` exercises the real conversion.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _unet_resnet(rest: str) -> str:
    layer, _, param = rest.partition(".")
    return f"{_UNET_RESNET[layer]}.{param}"


def _unet_layer(blocks: str, index: int, part: str, rest: str) -> str:
    # In the original layout a block's resnet is its module 0 and its attention module 1.
    return f"{blocks}.{index}." + (f"0.{_unet_resnet(rest)}" if part == "resnets" else f"1.{rest}")


_Rules = tuple[tuple[str, Callable[[re.Match[str]], str]], ...]


def _rename(key: str, rules: _Rules) -> str | None:
    """The name the first rule whose pattern matches all of `key` gives it; None when none matches."""
    for pattern, name in rules:
        if m := re.fullmatch(pattern, key):
            return name(m)
    return None


def unet_key_to_ldm(key: str, layers_per_block: int, up_blocks_with_attention: frozenset[int]) -> str:
    per_block = layers_per_block + 1
    for old, new in _UNET_TOP.items():
        if key.startswith(old):
            return new + key[len(old) :]

    def upsampler(block: int) -> str:
        slot = 2 if block in up_blocks_with_attention else 1
        return f"output_blocks.{per_block * block + layers_per_block}.{slot}"

    renamed = _rename(key, (
        (r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)",
         lambda m: _unet_layer("input_blocks", 1 + per_block * int(m[1]) + int(m[3]), m[2], m[4])),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)",
         lambda m: f"input_blocks.{per_block * (int(m[1]) + 1)}.0.op.{m[2]}"),
        (r"mid_block\.resnets\.(\d+)\.(.+)", lambda m: f"middle_block.{2 * int(m[1])}.{_unet_resnet(m[2])}"),
        (r"mid_block\.attentions\.0\.(.+)", lambda m: f"middle_block.1.{m[1]}"),
        (r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)",
         lambda m: _unet_layer("output_blocks", per_block * int(m[1]) + int(m[3]), m[2], m[4])),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", lambda m: f"{upsampler(int(m[1]))}.conv.{m[2]}"),
    ))
    if renamed is None:
        raise ValueError(f"no original-layout name for UNet parameter {key!r}")
    return renamed


_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_key_to_ldm(key: str, num_blocks: int) -> str:
    key = key.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")

    def up(block: str) -> str:
        # The original decoder numbers its levels from the bottom, diffusers from the top.
        return f"decoder.up.{num_blocks - 1 - int(block)}"

    renamed = _rename(key, (
        (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", lambda m: f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)",
         lambda m: f"encoder.down.{m[1]}.downsample.conv.{m[2]}"),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", lambda m: f"{up(m[1])}.block.{m[2]}.{m[3]}"),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", lambda m: f"{up(m[1])}.upsample.conv.{m[2]}"),
        (r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"),
        (r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)",
         lambda m: f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}"),
    ))
    return key if renamed is None else renamed


def _vae_to_ldm(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in vae.state_dict().items():
        new = vae_key_to_ldm(key, len(vae.config.block_out_channels))
        # The original VAE's attention projections are 1x1 convolutions.
        if ".mid.attn_1." in new and new.endswith(".weight") and not new.endswith("norm.weight"):
            tensor = tensor[:, :, None, None]
        out[new] = tensor
    return out


def _unet_to_ldm(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    with_attention = frozenset(i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t)
    return {
        unet_key_to_ldm(key, unet.config.layers_per_block, with_attention): tensor
        for key, tensor in unet.state_dict().items()
    }


def _clip_to_ldm(text_encoder: CLIPTextModel) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 drops the `text_model.` level from CLIPTextModel; the original layout has it.
    return {
        (key if key.startswith("text_model.") else f"text_model.{key}"): tensor
        for key, tensor in text_encoder.state_dict().items()
    }


_OPEN_CLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def _open_clip_to_ldm(text_encoder: CLIPTextModelWithProjection) -> dict[str, torch.Tensor]:
    """OpenCLIP's layout: fused q/k/v projections and a transposed text projection."""
    sd = text_encoder.state_dict()
    out = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].T.contiguous(),
    }
    for i in range(text_encoder.config.num_hidden_layers):
        layer = f"text_model.encoder.layers.{i}."
        block = f"transformer.resblocks.{i}."
        for param in ("weight", "bias"):
            fused = [sd[f"{layer}self_attn.{p}_proj.{param}"] for p in "qkv"]
            out[f"{block}attn.in_proj_{param}"] = torch.cat(fused)
            for old, new in _OPEN_CLIP_LAYER.items():
                out[f"{block}{new}.{param}"] = sd[f"{layer}{old}.{param}"]
    return out


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: tensor.contiguous() for key, tensor in tensors.items()}


def original_state_dict(pipe: DiffusionPipeline) -> dict[str, torch.Tensor]:
    """The pipeline's weights named as in an A1111 / ComfyUI single-file checkpoint."""
    tensors = _prefixed("model.diffusion_model.", _unet_to_ldm(pipe.unet))
    tensors |= _prefixed("first_stage_model.", _vae_to_ldm(pipe.vae))
    if hasattr(pipe, "text_encoder_2"):
        tensors |= _prefixed("conditioner.embedders.0.transformer.", _clip_to_ldm(pipe.text_encoder))
        tensors |= _prefixed("conditioner.embedders.1.model.", _open_clip_to_ldm(pipe.text_encoder_2))
    else:
        tensors |= _prefixed("cond_stage_model.transformer.", _clip_to_ldm(pipe.text_encoder))
    return tensors


def write_single_file(pipe: DiffusionPipeline, path: Path) -> None:
    """`path` (.safetensors) plus the `<stem>.config/` folder that describes its architecture."""
    save_file(original_state_dict(pipe), str(path), metadata={"format": "pt"})
    config_dir = path.with_suffix(".config")
    pipe.save_pretrained(config_dir)
    for weights in config_dir.rglob("*.safetensors"):
        weights.unlink()
