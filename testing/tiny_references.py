"""Tiny random-weight IP-Adapters for the tiny checkpoints of tiny_models.py, and a tiny CLIP vision encoder,
as single `.safetensors` files with h94/IP-Adapter's keys, in ComfyUI's and A1111's folders
(server/models/ipadapters.py):

ipadapter/tiny-sd15-ip-adapter.safetensors            plain: 4 tokens from the image embedding
ipadapter/tiny-sd15-ip-adapter-plus.safetensors       plus: a Resampler over the hidden states, 16 tokens
ipadapter/tiny-sd15-ip-adapter-plus-face.safetensors  face: a plus adapter with "face" in its name
ipadapter/tiny-sd15-ip-adapter-full-face.safetensors  full face: an MLP over every hidden state
ControlNet/tiny-sdxl-ip-adapter.safetensors           plain, where A1111's ControlNet extension keeps it
ipadapter/tiny-sdxl-ip-adapter-plus.safetensors       plus
ipadapter/old-ip-adapter.bin                          a pickle: refused unopened
clip_vision/tiny-clip-vision.safetensors              CLIPVisionModelWithProjection, with its
                                                      tiny-clip-vision.config.json (a tiny encoder's
                                                      attention heads are not in its shapes)

The tiny UNets' text widths (32, 96) tell no family, so each adapter says its family as kohya's key does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from .tiny_models import MARKER, Family, _unet, _written

ENCODER_HIDDEN = 32
ENCODER_PROJECTION = 24
RESAMPLER_WIDTH = 64  # diffusers reads a Resampler's heads as its width / 64
RESAMPLER_DEPTH = 4
PLUS_TOKENS = 16
BASE_MODEL = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}


def tiny_clip_vision(seed: int = 0, projection: int = ENCODER_PROJECTION,
                     image_size: int = 28) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=ENCODER_HIDDEN, intermediate_size=37, num_attention_heads=4,
                              num_hidden_layers=2, projection_dim=projection, image_size=image_size, patch_size=14)
    return CLIPVisionModelWithProjection(config).eval()


def write_clip_vision(encoder: CLIPVisionModelWithProjection, path: Path) -> None:
    """`encoder` as a single file, with its config beside it as `<stem>.config.json`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(path))
    encoder.config.to_json_file(path.with_suffix(".config.json"))


def _projection(variant: str, context: int, generator: torch.Generator, embeds: int = ENCODER_PROJECTION,
                hidden: int = ENCODER_HIDDEN) -> dict[str, torch.Tensor]:
    """An image projection of `variant` under h94's names, taking image embeddings of width `embeds` (plain)
    or hidden states of width `hidden`."""

    def randn(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    def norm(width: int) -> dict[str, torch.Tensor]:
        return {"weight": 1 + randn(width, scale=0.1), "bias": randn(width, scale=0.1)}

    if variant == "plain":
        tensors = {"proj.weight": randn(4 * context, embeds), "proj.bias": randn(4 * context)}
        tensors |= {f"norm.{k}": v for k, v in norm(context).items()}
    elif variant == "full_face":
        tensors = {"proj.0.weight": randn(hidden, hidden), "proj.0.bias": randn(hidden),
                   "proj.2.weight": randn(context, hidden), "proj.2.bias": randn(context)}
        tensors |= {f"proj.3.{k}": v for k, v in norm(context).items()}
    else:
        width = RESAMPLER_WIDTH
        tensors = {"latents": randn(1, PLUS_TOKENS, width, scale=1.0),
                   "proj_in.weight": randn(width, hidden), "proj_in.bias": randn(width),
                   "proj_out.weight": randn(context, width), "proj_out.bias": randn(context)}
        tensors |= {f"norm_out.{k}": v for k, v in norm(context).items()}
        for i in range(RESAMPLER_DEPTH):
            layer = f"layers.{i}"
            tensors |= {f"{layer}.0.norm1.{k}": v for k, v in norm(width).items()}
            tensors |= {f"{layer}.0.norm2.{k}": v for k, v in norm(width).items()}
            tensors |= {f"{layer}.0.to_q.weight": randn(width, width),
                        f"{layer}.0.to_kv.weight": randn(2 * width, width),
                        f"{layer}.0.to_out.weight": randn(width, width)}
            tensors |= {f"{layer}.1.0.{k}": v for k, v in norm(width).items()}
            tensors |= {f"{layer}.1.1.weight": randn(4 * width, width), f"{layer}.1.3.weight": randn(width, 4 * width)}
    return {f"image_proj.{k}": v.contiguous() for k, v in tensors.items()}


def tiny_ipadapter(family: Family, variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """An IP-Adapter of `variant` (plain, plus, full_face) for the tiny `family` UNet and the tiny encoder."""
    return ipadapter_for(_unet(family, "regular"), variant, seed)


def ipadapter_for(unet: UNet2DConditionModel, variant: str, seed: int = 0, embeds: int = ENCODER_PROJECTION,
                  hidden: int = ENCODER_HIDDEN) -> dict[str, torch.Tensor]:
    """A random IP-Adapter of `variant` for `unet`, under h94's names: `ip_adapter.<n>` for the n-th attention
    processor, cross-attention layers being the odd ones."""
    generator = torch.Generator().manual_seed(seed)
    context = unet.config.cross_attention_dim
    modules = dict(unet.named_modules())
    tensors = _projection(variant, context, generator, embeds, hidden)
    for number, name in enumerate(n for n in unet.attn_processors if n.endswith("attn2.processor")):
        inner = modules[name.removesuffix(".processor")].to_k.out_features
        for which in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{2 * number + 1}.{which}.weight"] = torch.randn(inner, context, generator=generator)
    return tensors


def write_tiny_references(root: Path) -> dict[str, Path]:
    ipadapter, controlnet, vision = root / "ipadapter", root / "ControlNet", root / "clip_vision"
    paths = {
        "tiny-sd15-ip-adapter": ipadapter / "tiny-sd15-ip-adapter.safetensors",
        "tiny-sd15-ip-adapter-plus": ipadapter / "tiny-sd15-ip-adapter-plus.safetensors",
        "tiny-sd15-ip-adapter-plus-face": ipadapter / "tiny-sd15-ip-adapter-plus-face.safetensors",
        "tiny-sd15-ip-adapter-full-face": ipadapter / "tiny-sd15-ip-adapter-full-face.safetensors",
        "tiny-sdxl-ip-adapter": controlnet / "tiny-sdxl-ip-adapter.safetensors",
        "tiny-sdxl-ip-adapter-plus": ipadapter / "tiny-sdxl-ip-adapter-plus.safetensors",
        "old-ip-adapter": ipadapter / "old-ip-adapter.bin",
        "tiny-clip-vision": vision / "tiny-clip-vision.safetensors",
    }
    made = {"tiny-sd15-ip-adapter": ("sd15", "plain"), "tiny-sd15-ip-adapter-plus": ("sd15", "plus"),
            "tiny-sd15-ip-adapter-plus-face": ("sd15", "plus"), "tiny-sd15-ip-adapter-full-face": ("sd15", "full_face"),
            "tiny-sdxl-ip-adapter": ("sdxl", "plain"), "tiny-sdxl-ip-adapter-plus": ("sdxl", "plus")}

    def write() -> None:
        for folder in (ipadapter, controlnet, vision):
            folder.mkdir(parents=True, exist_ok=True)
        for seed, (name, (family, variant)) in enumerate(made.items()):
            save_file(tiny_ipadapter(family, variant, seed), str(paths[name]),  # type: ignore[arg-type]
                      metadata={"ss_base_model_version": BASE_MODEL[family]})
        paths["old-ip-adapter"].write_bytes(b"\x80\x04K\x01.")  # a pickle of 1: never opened
        write_clip_vision(tiny_clip_vision(), paths["tiny-clip-vision"])

    return _written(root, MARKER + "-references", paths, write)
