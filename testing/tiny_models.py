"""Tiny random-weight Stable Diffusion 1.5 / SDXL pipelines and model folders for tests.

The pipelines have the real architectures at toy sizes (a 2-level UNet, a 4-level VAE so the
latent scale factor is 8 like the real ones, 2-layer CLIP text encoders) and load, save and run
like real models. `write_tiny_models` lays them out as a user's models folder: diffusers folders,
single-file checkpoints in the original (LDM / A1111) key layout and files the server must refuse;
`write_tiny_adapters` adds LoRAs and embeddings.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Literal

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from server.models.loading import CONFIGS

from .ldm_layout import write_single_file

Family = Literal["sd15", "sdxl"]
Variant = Literal["regular", "inpaint"]

VOCAB_SIZE = 1000
# Bumped whenever the models change, so a cached folder from an older version is rebuilt.
VERSION = "2"
MARKER = ".tiny-models"
TEXT_HIDDEN = 32
TEXT2_HIDDEN = 64  # differs from TEXT_HIDDEN: single-file loading tells SDXL's two encoders apart by width
TEXT2_PROJECTION = 32
TIME_EMBED = 8


@cache
def _clip_bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """The real CLIP BPE cut to its first merges: every kept merge only joins earlier tokens."""
    tokenizer_dir = CONFIGS / "sd15" / "tokenizer"
    full = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    lines = (tokenizer_dir / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    merges = lines[: VOCAB_SIZE - 512 - 2]
    by_id = sorted(full, key=full.__getitem__)
    tokens = by_id[: 512 + len(merges)] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, tuple(tuple(m.split()) for m in merges)


def tiny_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    vocab, merges = _clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=77)


def _text_config(hidden: int, projection: int) -> CLIPTextConfig:
    vocab, _ = _clip_bpe()
    return CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=VOCAB_SIZE,
        hidden_act="gelu",
        projection_dim=projection,
    )


def _unet(family: Family, variant: Variant) -> UNet2DConditionModel:
    common = dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=9 if variant == "inpaint" else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=2,
        attention_head_dim=(2, 4),
    )
    if family == "sd15":
        return UNet2DConditionModel(cross_attention_dim=TEXT_HIDDEN, **common)
    return UNet2DConditionModel(
        cross_attention_dim=TEXT_HIDDEN + TEXT2_HIDDEN,
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        # 6 time ids (original size, crop, target size) + the pooled text embedding.
        projection_class_embeddings_input_dim=6 * TIME_EMBED + TEXT2_PROJECTION,
        **common,
    )


def _vae(family: Family) -> AutoencoderKL:
    extra = {"scaling_factor": 0.13025, "force_upcast": True} if family == "sdxl" else {}
    return AutoencoderKL(
        block_out_channels=(4, 4, 8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=64,
        **extra,
    )


def tiny_autoencoder() -> AutoencoderTiny:
    """A seeded random-weight tiny autoencoder (TAESD's kind) at toy size."""
    torch.manual_seed(0)
    return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))


def tiny_pipeline(family: Family, variant: Variant = "regular") -> DiffusionPipeline:
    """A seeded random-weight pipeline: the same arguments always give the same weights."""
    torch.manual_seed(0)
    unet = _unet(family, variant)
    torch.manual_seed(0)
    vae = _vae(family)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(TEXT_HIDDEN, TEXT_HIDDEN))
    if family == "sd15":
        cls = StableDiffusionInpaintPipeline if variant == "inpaint" else StableDiffusionPipeline
        return cls(
            vae=vae,
            text_encoder=text_encoder.eval(),
            tokenizer=tiny_tokenizer(),
            unet=unet,
            scheduler=PNDMScheduler.from_pretrained(CONFIGS / "sd15", subfolder="scheduler"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(TEXT2_HIDDEN, TEXT2_PROJECTION))
    components = dict(
        vae=vae,
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_pretrained(CONFIGS / "sdxl", subfolder="scheduler"),
    )
    if variant == "inpaint":
        return StableDiffusionXLInpaintPipeline(**components, requires_aesthetics_score=False)
    return StableDiffusionXLPipeline(**components)


# --- LoRAs and embeddings -----------------------------------------------------------------------


def _write_lora(pipe: DiffusionPipeline, path: Path) -> None:
    """A diffusers-format LoRA (unet + text encoders) with non-zero weights, so it changes outputs."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"], init_lora_weights=False)
    text_config = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
                             init_lora_weights=False)
    torch.manual_seed(0)
    pipe.unet.add_adapter(config)
    layers = {"unet_lora_layers": get_peft_model_state_dict(pipe.unet)}
    encoders = ["text_encoder", "text_encoder_2"] if hasattr(pipe, "text_encoder_2") else ["text_encoder"]
    for name in encoders:
        getattr(pipe, name).add_adapter(text_config)
        layers[f"{name}_lora_layers"] = get_peft_model_state_dict(getattr(pipe, name))
    tmp = path.with_suffix(".tmp")
    type(pipe).save_lora_weights(tmp, **layers)
    (tmp / "pytorch_lora_weights.safetensors").replace(path)
    shutil.rmtree(tmp)


def _write_embedding(family: Family, path: Path) -> None:
    """Textual-inversion vectors in the A1111 layouts: `emb_params` (SD1.5), `clip_l` + `clip_g` (SDXL)."""
    gen = torch.Generator().manual_seed(0)
    if family == "sd15":
        tensors = {"emb_params": torch.randn(2, TEXT_HIDDEN, generator=gen)}
    else:
        tensors = {
            "clip_l": torch.randn(2, TEXT_HIDDEN, generator=gen),
            "clip_g": torch.randn(2, TEXT2_HIDDEN, generator=gen),
        }
    save_file(tensors, str(path))


class _ExplodesWhenUnpickled:
    """Unpickling this divides by zero: a .ckpt holding it proves the server never unpickles."""

    def __reduce__(self):
        import operator

        return operator.truediv, (1, 0)


def _written(root: Path, marker: str, paths: dict[str, Path], write: Callable[[], None]) -> dict[str, Path]:
    """Run `write` unless `root` already holds this version of its files."""
    stamp = root / marker
    if not (stamp.is_file() and stamp.read_text() == VERSION):
        write()
        stamp.write_text(VERSION)
    return paths


def write_tiny_models(root: Path) -> dict[str, Path]:
    """Lay out the checkpoints of a models folder in `root` and return model name -> path.

    checkpoints/: tiny-sd15, tiny-sd15-inpaint, tiny-sdxl, tiny-sdxl-inpaint (diffusers folders),
    the same four as single files in the original key layout (tiny-sd15-single.safetensors,
    tiny-sd15-inpaint-single.safetensors, ..., each with its `<stem>.config/` folder),
    broken.safetensors (truncated), old.ckpt (a pickle that raises when unpickled).
    LoRAs and embeddings come from `write_tiny_adapters`, so that a problem there fails only the
    tests that use them.
    """
    checkpoints = root / "checkpoints"
    paths = {
        "tiny-sd15": checkpoints / "tiny-sd15",
        "tiny-sd15-inpaint": checkpoints / "tiny-sd15-inpaint",
        "tiny-sdxl": checkpoints / "tiny-sdxl",
        "tiny-sdxl-inpaint": checkpoints / "tiny-sdxl-inpaint",
        "tiny-sd15-single": checkpoints / "tiny-sd15-single.safetensors",
        "tiny-sdxl-single": checkpoints / "tiny-sdxl-single.safetensors",
        "tiny-sd15-inpaint-single": checkpoints / "tiny-sd15-inpaint-single.safetensors",
        "tiny-sdxl-inpaint-single": checkpoints / "tiny-sdxl-inpaint-single.safetensors",
        "broken": checkpoints / "broken.safetensors",
        "old": checkpoints / "old.ckpt",
    }

    def write() -> None:
        checkpoints.mkdir(parents=True, exist_ok=True)
        for family in ("sd15", "sdxl"):
            for variant in ("regular", "inpaint"):
                suffix = "-inpaint" if variant == "inpaint" else ""
                pipe = tiny_pipeline(family, variant)
                pipe.save_pretrained(paths[f"tiny-{family}{suffix}"])
                write_single_file(pipe, paths[f"tiny-{family}{suffix}-single"])
        whole = paths["tiny-sd15-single"].read_bytes()
        paths["broken"].write_bytes(whole[: len(whole) // 2])
        paths["old"].write_bytes(pickle.dumps({"state_dict": _ExplodesWhenUnpickled()}))

    return _written(root, MARKER, paths, write)


def write_tiny_adapters(root: Path) -> dict[str, Path]:
    """Add LoRAs and embeddings for the tiny checkpoints to the models folder `root`:
    loras/: tiny-sd15-lora, tiny-sdxl-lora; embeddings/: tiny-sd15-embedding, tiny-sdxl-embedding."""
    loras, embeddings = root / "loras", root / "embeddings"
    paths = {
        "tiny-sd15-lora": loras / "tiny-sd15-lora.safetensors",
        "tiny-sdxl-lora": loras / "tiny-sdxl-lora.safetensors",
        "tiny-sd15-embedding": embeddings / "tiny-sd15-embedding.safetensors",
        "tiny-sdxl-embedding": embeddings / "tiny-sdxl-embedding.safetensors",
    }

    def write() -> None:
        for folder in (loras, embeddings):
            folder.mkdir(parents=True, exist_ok=True)
        for family in ("sd15", "sdxl"):
            _write_lora(tiny_pipeline(family), paths[f"tiny-{family}-lora"])
            _write_embedding(family, paths[f"tiny-{family}-embedding"])

    return _written(root, MARKER + "-adapters", paths, write)
