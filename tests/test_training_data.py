"""The pure parts of training: buckets, captions, the trigger check, the file layouts and the defaults."""

from __future__ import annotations

import pytest
import torch

from server.errors import BadInput
from server.training import embedding, lora
from server.training.dataset import bucket, caption
from server.training.defaults import DEFAULTS, settings_for
from shared.training import TrainingImage
from testing.tiny_models import tiny_tokenizer
from testing.training import pictures, train_request


@pytest.mark.parametrize(("size", "resolution", "expected"), [
    ((512, 512), 512, (512, 512)),
    ((1024, 1024), 512, (512, 512)),
    ((768, 512), 512, (640, 448)),
    ((512, 768), 512, (448, 640)),
    ((4000, 100), 512, (1024, 256)),  # capped at 4:1
    ((1024, 1024), 1024, (1024, 1024)),
    ((1920, 1080), 1024, (1344, 768)),
    ((100, 100), 64, (64, 64)),
    ((96, 64), 64, (64, 64)),
])
def test_bucket_keeps_the_aspect_ratio_near_the_area_in_sides_of_64(size, resolution, expected):
    width, height = bucket(*size, resolution)
    assert (width, height) == expected
    assert width % 64 == 0 and height % 64 == 0


@pytest.mark.parametrize(("given", "kind", "expected"), [
    (None, "lora", "zqx, a picture"),
    (None, "embedding", "zqx"),
    ("  ", "lora", "zqx, a picture"),
    (" zqx on a hill ", "lora", "zqx on a hill"),
    ("zqx on a hill", "embedding", "zqx on a hill"),
])
def test_caption_is_the_pictures_own_else_made_from_the_trigger(given, kind, expected):
    item = TrainingImage(image=pictures(1)[0].image, caption=given)
    assert caption(item, kind, "zqx") == expected


@pytest.mark.parametrize(("trigger", "taken"), [("red", True), ("the", True), ("a", True), ("zqxtoy", False),
                                                ("Red", True)])
def test_a_trigger_the_tokenizer_already_has_is_refused(trigger, taken):
    if taken:
        with pytest.raises(BadInput) as raised:
            embedding.check_trigger([tiny_tokenizer()], trigger)
        assert raised.value.field == "trigger" and repr(trigger) in raised.value.message
    else:
        embedding.check_trigger([tiny_tokenizer()], trigger)


def test_lora_file_has_kohya_keys_with_alpha_and_sd15_text_encoder_prefix():
    state = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 8),
             "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.ones(8, 4),
             "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(4, 8),
             "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.ones(8, 4)}
    sd15 = lora.export(state, "sd15")
    assert sorted(sd15) == [
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha",
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight",
    ]
    assert float(sd15["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha"]) == 4
    assert sd15["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight"].dtype == \
        torch.float16
    sdxl = lora.export({**state, "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight":
                        torch.ones(4, 8)}, "sdxl")
    assert {k.split("_text")[0] for k in sdxl if k.startswith("lora_te")} == {"lora_te1", "lora_te2"}


def test_embedding_file_layouts_are_a1111s():
    state = {"vectors.0": torch.ones(2, 32), "vectors.1": torch.ones(2, 64)}
    assert list(embedding.export({"vectors.0": state["vectors.0"]}, "sd15")) == ["emb_params"]
    assert sorted(embedding.export(state, "sdxl")) == ["clip_g", "clip_l"]


def test_defaults_come_from_the_table_and_the_request_overrides_them():
    request = train_request(steps=None, learning_rate=None, resolution=None, rank=12)
    chosen = settings_for(request, "sd15", embedded=False)
    assert (chosen.steps, chosen.learning_rate, chosen.resolution, chosen.rank) == (1500, 1e-4, 512, 12)
    assert settings_for(request, "sdxl", embedded=True) == settings_for(request, "sd15", embedded=True)
    assert DEFAULTS[("sd15", "embedding")].learning_rate == 5e-3


@pytest.mark.parametrize(("family", "embedded", "asked", "expected"), [
    ("sd15", False, None, False),
    ("sdxl", False, None, False),
    ("sd15", True, None, True),  # the demo model learns a new shape only through its text encoder
    ("sd15", True, False, False),
    ("sd15", False, True, True),
])
def test_a_lora_trains_the_text_encoder_where_its_row_or_the_request_says(family, embedded, asked, expected):
    request = train_request(train_text_encoder=asked)
    assert settings_for(request, family, embedded=embedded).train_text_encoder is expected
