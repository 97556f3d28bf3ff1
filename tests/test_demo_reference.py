"""The demo model's reference adapter: its training pairs, its weights' layout, and what the shipped
files do (tools/demo_model/reference.py, docs/demo-model.md)."""

from __future__ import annotations

import random

import pytest
import torch

from server.models.demo import MODEL_DIR
from tools.demo_model.data import MIN_COLOUR_DISTANCE, SHAPE_COLOURS, Background, Scene, render, sample_scene
from tools.demo_model.detect import background_names
from tools.demo_model.reference import (
    ADAPTER_FILE,
    ENCODER_FILE,
    adapter_state_dict,
    companion,
    cross_attentions,
    initial_adapter,
    load_encoder,
    reference_embeds,
    reference_scenes,
    referenced,
    split,
    with_adapter,
)


def _stands_apart(scene: Scene) -> bool:
    return all(sum((a - b) ** 2 for a, b in zip(SHAPE_COLOURS[s.colour], rgb, strict=True)) ** 0.5
               > MIN_COLOUR_DISTANCE for s in scene.shapes for rgb in scene.background.rgb)


def test_a_companion_shares_the_background_and_draws_other_shapes() -> None:
    rng = random.Random(5)
    scenes = [sample_scene(rng) for _ in range(40)]
    companions = [companion(s, random.Random(i)) for i, s in enumerate(scenes)]
    assert companions == [companion(s, random.Random(i)) for i, s in enumerate(scenes)]  # seeded
    assert all(c.background == s.background for c, s in zip(companions, scenes, strict=True))
    assert sum(c.shapes != s.shapes for c, s in zip(companions, scenes, strict=True)) == len(scenes)
    assert all(_stands_apart(c) and c.shapes for c in companions)


def test_evaluation_pairs_put_one_shape_on_the_references_background() -> None:
    pairs = reference_scenes(30, 11)
    assert pairs == reference_scenes(30, 11)
    assert all(len(t.shapes) == 1 and t.background == r.background and _stands_apart(t) for r, t in pairs)
    assert {r.background.kind for r, _ in pairs} == {"flat", "gradient", "scenery"}


def test_a_given_background_leaves_the_rest_of_the_draw_as_it_was() -> None:
    background = Background("flat", ("blue",))
    scene = sample_scene(random.Random(3), background=background)
    assert scene.background == background and _stands_apart(scene)


@pytest.fixture(scope="module")
def unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(MODEL_DIR / "unet").requires_grad_(False)


def test_adapter_weights_take_h94s_keys_and_load_back(unet) -> None:
    fresh = initial_adapter(unet, 64, 0)
    names = cross_attentions(unet)
    expected = {"image_proj.proj.weight", "image_proj.proj.bias", "image_proj.norm.weight", "image_proj.norm.bias"}
    # diffusers numbers every attention processor: the cross-attentions are the odd ones.
    expected |= {f"ip_adapter.{2 * i + 1}.to_{kv}_ip.weight" for i in range(len(names)) for kv in "kv"}
    assert fresh["image_proj"]["proj.weight"].shape == (4 * unet.config.cross_attention_dim, 64)
    unet._load_ip_adapter_weights([fresh], low_cpu_mem_usage=False)
    state = adapter_state_dict(unet)
    assert set(state) == expected
    assert all(torch.equal(state[f"{part}.{key}"], value) for part, values in fresh.items()
               for key, value in values.items())
    assert split(state).keys() == fresh.keys()
    # Started from the UNet's own projections, as IP-Adapter starts.
    first = unet.get_submodule(names[0].removesuffix(".processor"))
    assert torch.equal(state["ip_adapter.1.to_k_ip.weight"], first.to_k.weight)
    assert torch.equal(state["ip_adapter.1.to_v_ip.weight"], first.to_v.weight)


# --- the shipped files -------------------------------------------------------------------------

shipped = pytest.mark.skipif(not ADAPTER_FILE.exists(), reason="the reference adapter is not shipped")


@shipped
def test_shipped_files_are_small_float16_and_load_as_any_ip_adapter() -> None:
    from safetensors.torch import load_file

    assert ENCODER_FILE.stat().st_size + ADAPTER_FILE.stat().st_size < 2 * 1024 * 1024
    assert all(v.dtype == torch.float16 for f in (ENCODER_FILE, ADAPTER_FILE) for v in load_file(f).values())
    encoder = load_encoder(ENCODER_FILE)
    assert "visual_projection.weight" in load_file(ENCODER_FILE)
    pipe = with_adapter(ADAPTER_FILE)
    assert pipe.unet.encoder_hid_proj.image_projection_layers[0].image_embeds.in_features == \
        encoder.config.projection_dim


@shipped
@pytest.mark.parametrize("colour", ["green", "purple", "black"])
def test_an_empty_prompt_takes_the_references_background(colour: str) -> None:
    torch.set_num_threads(2)
    reference = sample_scene(random.Random(1), background=Background("flat", (colour,)))
    pipe = with_adapter(ADAPTER_FILE)
    pipe.set_progress_bar_config(disable=True)
    embeds = reference_embeds(load_encoder(ENCODER_FILE), [render(reference, 128)])
    picture = referenced(pipe, [""], embeds, 128, seed=0, steps=12)[0]
    assert background_names(picture) == (colour, colour)
