"""Full-size random-weight models for the benchmarks: what a real model costs, without its weights.

`write_random_sd15` lays out SD1.5's architecture (860 M-parameter UNet) from the configs that ship
with the server as a diffusers folder; `write_random_taesd` adds TAESD's architecture (diffusers'
`AutoencoderTiny` defaults) as the weights file the installer places in `vae-approx/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from server.models import schedulers
from server.models.loading import CONFIGS

SD15_NAME = "random-sd15"


def write_random_sd15(models: Path) -> Path:
    """`models/checkpoints/random-sd15`, seeded (written once: a rerun keeps the folder)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = models / "checkpoints" / SD15_NAME
    if (folder / "model_index.json").is_file():
        return folder
    configs = CONFIGS / "sd15"
    torch.manual_seed(0)
    scheduler_config = json.loads((configs / "scheduler" / "scheduler_config.json").read_text())
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(configs / "tokenizer"),
        scheduler=schedulers.make_scheduler("euler", scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def write_random_taesd(models: Path) -> Path:
    """`models/vae-approx/taesd.safetensors`: TAESD's architecture with seeded random weights."""
    from diffusers import AutoencoderTiny

    path = models / "vae-approx" / "taesd.safetensors"
    if path.is_file():
        return path
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in AutoencoderTiny().state_dict().items()}, path)
    return path
