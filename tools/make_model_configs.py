"""Write the diffusers configs that let single-file checkpoints load with no network.

    python -m tools.make_model_configs [--wheel open_clip_torch-*.whl] [--out server/models/configs]

Writes server/models/configs/{sd15,sd15-inpaint,sdxl,sdxl-inpaint}/: model_index.json, scheduler/,
unet/, vae/, text_encoder/ (+ text_encoder_2/ for SDXL) configs and the CLIP tokenizer files.
The configs describe Stable Diffusion 1.5 and SDXL 1.0 base (and their 9-channel inpainting
variants) as published in diffusers format. The CLIP BPE vocabulary is rebuilt from
`bpe_simple_vocab_16e6.txt.gz` inside the `open_clip_torch` wheel, fetched with
`pip download --no-deps` when --wheel is not given.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tools.demo_model.vocab import clip_byte_characters

REPO = Path(__file__).resolve().parent.parent

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# Lines 1..48894 of the BPE file are the merges CLIP uses: 49408 tokens = 2 * 256 bytes + merges + 2 specials.
MERGE_COUNT = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"

SCHEDULER_BASE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", **SCHEDULER_BASE}
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    **SCHEDULER_BASE,
    "interpolation_type": "linear",
    "sample_max_value": 1.0,
    "use_karras_sigmas": False,
}

UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
}
SD15_UNET = {
    **UNET,
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SDXL_UNET = {
    **UNET,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    # 6 time ids (original size, crop offset, target size) x 256 + the 1280-wide pooled text embedding.
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}

VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD15_VAE = {**VAE, "sample_size": 512, "scaling_factor": 0.18215}
# The SDXL VAE overflows in float16; force_upcast makes the pipelines decode in float32.
SDXL_VAE = {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

CLIP_TEXT = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    # eos_token_id 2 keeps the original pooling (at the highest token id, which is end-of-text).
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
OPEN_CLIP_BIGG_TEXT = {
    **CLIP_TEXT,
    "architectures": ["CLIPTextModelWithProjection"],
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}

NO_COMPONENT = [None, None]


def tokenizer_config(pad_token: str) -> dict:
    return {
        "add_prefix_space": False,
        "bos_token": START,
        "do_lower_case": True,
        "eos_token": END,
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": END,
    }


def model_index(pipeline: str, sdxl: bool, inpaint: bool) -> dict:
    index = {
        "_class_name": pipeline,
        "feature_extractor": NO_COMPONENT,
        "image_encoder": NO_COMPONENT,
        "scheduler": ["diffusers", "EulerDiscreteScheduler" if sdxl else "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if sdxl:
        index["force_zeros_for_empty_prompt"] = True
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
        if inpaint:
            index["requires_aesthetics_score"] = False
    else:
        index["requires_safety_checker"] = False
        index["safety_checker"] = NO_COMPONENT
    return dict(sorted(index.items()))


def families() -> dict[str, dict[str, dict]]:
    """Folder name -> {relative file: JSON content}."""
    out = {}
    for name, pipeline, sdxl, inpaint in [
        ("sd15", "StableDiffusionPipeline", False, False),
        ("sd15-inpaint", "StableDiffusionInpaintPipeline", False, True),
        ("sdxl", "StableDiffusionXLPipeline", True, False),
        ("sdxl-inpaint", "StableDiffusionXLInpaintPipeline", True, True),
    ]:
        unet = {**(SDXL_UNET if sdxl else SD15_UNET), "in_channels": 9 if inpaint else 4}
        files = {
            "model_index.json": model_index(pipeline, sdxl, inpaint),
            "scheduler/scheduler_config.json": SDXL_SCHEDULER if sdxl else SD15_SCHEDULER,
            "unet/config.json": unet,
            "vae/config.json": SDXL_VAE if sdxl else SD15_VAE,
            "text_encoder/config.json": CLIP_TEXT,
            "tokenizer/tokenizer_config.json": tokenizer_config(END),
        }
        if sdxl:
            # OpenCLIP pads with "!" (token 0), not end-of-text: SDXL was trained that way.
            files["text_encoder_2/config.json"] = OPEN_CLIP_BIGG_TEXT
            files["tokenizer_2/tokenizer_config.json"] = tokenizer_config("!")
        out[name] = files
    return out


def clip_vocab(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    merges = bpe_text.split("\n")[1 : MERGE_COUNT + 1]
    tokens = list(clip_byte_characters().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [START, END]
    return {t: i for i, t in enumerate(tokens)}, merges


def read_bpe(wheel: Path | None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, "open_clip_torch"], check=True
            )
            wheel = next(Path(tmp).glob("open_clip_torch-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            return gzip.decompress(zf.read(BPE_MEMBER)).decode("utf-8")


def write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="an open_clip_torch wheel already on disk")
    parser.add_argument("--out", type=Path, default=REPO / "server" / "models" / "configs")
    args = parser.parse_args(argv)

    vocab, merges = clip_vocab(read_bpe(args.wheel))
    assert len(vocab) == 49408, len(vocab)
    vocab_json = json.dumps(vocab, ensure_ascii=False)
    merges_txt = "#version: 0.2\n" + "\n".join(merges) + "\n"
    for family, files in families().items():
        root = args.out / family
        for rel, content in files.items():
            write_json(root / rel, content)
        for tokenizer in ("tokenizer", "tokenizer_2"):
            if (root / tokenizer).is_dir():
                (root / tokenizer / "vocab.json").write_text(vocab_json, encoding="utf-8")
                (root / tokenizer / "merges.txt").write_text(merges_txt, encoding="utf-8")
        print(f"wrote {root}")


if __name__ == "__main__":
    main()
