"""The demo model: its data generator, tokenizer, detector, and the shipped weights' behaviour."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from server.conditioning.control import line_picture
from server.models.demo import MODEL_DIR, NAME
from tools.demo_model import concept
from tools.demo_model.controlnet import centroid, sketch
from tools.demo_model.data import (
    NEW_SHAPES,
    POSITIONS,
    SHAPE_COLOURS,
    SHAPES,
    Background,
    Scene,
    Shape,
    caption,
    render,
    sample_scene,
    scene_for_seed,
    training_caption,
)
from tools.demo_model.detect import Blob, background_names, check, find_blob, find_shape
from tools.demo_model.tiny_autoencoder import COPIED, Settings, cut_to_width, learning_rate, load_vae, make_tiny
from tools.demo_model.vocab import build_tokenizer, caption_words, learn_merges

PROMPT = "a large red circle on the left, blue background"


# --- data -----------------------------------------------------------------------------------


def test_a_seed_names_one_scene_caption_and_picture() -> None:
    first, again, other = scene_for_seed(7), scene_for_seed(7), scene_for_seed(8)
    assert first == again and first != other
    assert caption(first) == caption(again)
    assert np.array_equal(np.asarray(render(first, 64)), np.asarray(render(again, 64)))
    assert [training_caption(first, random.Random(3)) for _ in range(3)] == [
        training_caption(again, random.Random(3)) for _ in range(3)
    ]


def test_caption_describes_each_shape_and_the_background() -> None:
    scene = Scene(
        Background("flat", ("blue",)),
        (Shape("circle", "red", "large", "left"), Shape("star", "yellow", "small", "top")),
    )
    assert caption(scene) == "a large red circle on the left and a small yellow star at the top, blue background"
    gradient = Scene(Background("gradient", ("purple", "white")), (Shape("square", "black", "small", "center"),))
    assert caption(gradient) == "a small black square in the center, purple to white gradient background"


def test_sampled_scenes_keep_shapes_apart_and_visible() -> None:
    rng = random.Random(0)
    for _ in range(300):
        scene = sample_scene(rng)
        assert 1 <= len(scene.shapes) <= 3
        assert len({s.colour for s in scene.shapes}) == len(scene.shapes)
        assert len({s.position for s in scene.shapes}) == len(scene.shapes)
        for shape in scene.shapes:
            assert all(np.linalg.norm(np.subtract(SHAPE_COLOURS[shape.colour], bg)) > 90 for bg in scene.background.rgb)


def test_unknown_background_kind_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="background kind: unknown 'stripes'"):
        sample_scene(random.Random(0), background_kind="stripes")


# --- detector -------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [64, 128, 256])
def test_detector_reads_back_what_the_generator_drew(side: int) -> None:
    rng = random.Random(side)
    for _ in range(30):
        scene = sample_scene(rng)
        result = check(render(scene, side), scene)
        assert result.background_ok, (caption(scene), result.background_found)
        for shape in result.shapes:
            assert shape.colour_ok and shape.position_ok and shape.size_ok, (caption(scene), shape)


@pytest.mark.parametrize(
    ("x", "y", "position"),
    [(0.2, 0.5, "left"), (0.8, 0.45, "right"), (0.5, 0.2, "top"), (0.55, 0.8, "bottom"), (0.5, 0.5, "center")],
)
def test_blob_position_is_the_nearest_anchor(x: float, y: float, position: str) -> None:
    assert Blob("red", 0.05, x, y).position == position


def test_detector_finds_nothing_where_the_colour_is_absent() -> None:
    picture = render(Scene(Background("flat", ("green",)), ()), 64)
    assert background_names(picture) == ("green", "green")
    assert find_blob(picture, "red") is None
    with pytest.raises(ValueError, match="colour: unknown 'teal'"):
        find_blob(picture, "teal")


@pytest.mark.parametrize("side", [128, 256])  # at 64 px a small star is 14 px across: its notches blur
@pytest.mark.parametrize("kind", SHAPES + NEW_SHAPES)
@pytest.mark.parametrize(("size", "background", "colour"),
                         [("small", "white", "purple"), ("large", "white", "black"), ("large", "yellow", "blue"),
                          ("small", "black", "orange")])
def test_detector_names_each_drawn_shape(side: int, kind: str, size: str, background: str, colour: str) -> None:
    for position in ("left", "center", "bottom"):
        picture = render(Scene(Background("flat", (background,)), (Shape(kind, colour, size, position),)), side)
        found = find_shape(picture, colour)
        assert found is not None and found[1] == kind, (position, found)


def _one(kind: str, colour: str, size: str = "large", background: str = "white") -> np.ndarray:
    return np.asarray(render(Scene(Background("flat", (background,)), (Shape(kind, colour, size, "center"),)), 128))


@pytest.mark.parametrize(
    ("picture", "present", "dominant"),
    [
        (_one("cross", "purple"), True, True),
        (_one("cross", "purple", "small"), True, True),
        (_one("star", "purple"), False, True),  # the colour without the shape
        (_one("cross", "red"), False, False),  # the shape without the colour
        (_one("cross", "purple", background="purple"), False, True),  # all purple, no shape stands out
        (np.hstack([_one("circle", "red")[:, 32:96], _one("cross", "purple", "small")[:, 32:96]]), True, False),
        (render(Scene(Background("flat", ("white",)), ()), 128), False, False),
    ],
)
def test_concept_verdicts(picture, present: bool, dominant: bool) -> None:
    assert concept.concept_present(picture) == present
    assert concept.colour_dominant(picture) == dominant


def test_concept_pictures_are_seeded_and_captioned() -> None:
    first, again = concept.training_set(6, 64), concept.training_set(6, 64)
    assert [c for _, c in first] == [c for _, c in again]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for (a, _), (b, _) in zip(first, again, strict=True))
    pictures = concept.training_set(20)
    assert all(concept.concept_present(image) for image, _ in pictures)
    captions = [text for _, text in pictures]
    assert all(concept.TRIGGER in text and text.endswith("background") for text in captions)
    assert "a zorp on a white background" in captions and any("small zorp" in text for text in captions)
    assert not any("purple" in text or "cross" in text for text in captions)  # the trigger says it all


# --- tokenizer ------------------------------------------------------------------------------


def test_learned_merges_build_each_word_from_characters() -> None:
    merges = learn_merges(["ab", "abc", "b"])
    assert merges == [("a", "b"), ("a", "b</w>"), ("ab", "c</w>")]  # ties: alphabetical


def test_tokenizer_gives_one_token_per_caption_word(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(tmp_path)
    for word in caption_words():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    ids = tokenizer(PROMPT).input_ids
    assert len(ids) == len(PROMPT.replace(",", " ,").split()) + 2
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ,", ",") == PROMPT
    assert len(tokenizer("zebra", add_special_tokens=False).input_ids) > 1  # unknown words still tokenize
    assert tokenizer.model_max_length == 77


# --- the tiny autoencoder's recipe ---------------------------------------------------------


@pytest.mark.parametrize(("step", "rate"), [(0, 1e-5), (99, 1e-3), (5999, 1e-4)])  # warm-up, peak, a tenth
def test_the_tiny_autoencoder_trains_in_one_learning_rate_cycle(step: int, rate: float) -> None:
    assert learning_rate(step, Settings()) == pytest.approx(rate, rel=1e-2)


def test_the_tiny_autoencoders_decoder_starts_from_the_vaes_lowest_level_and_keeps_it() -> None:
    vae = load_vae()
    tiny = make_tiny(vae)
    for name in COPIED:
        part, theirs = tiny.get_submodule(name).state_dict(), vae.get_submodule(name).state_dict()
        assert part.keys() == theirs.keys() and all(torch.equal(part[key], theirs[key]) for key in part)
        assert not any(p.requires_grad for p in tiny.get_submodule(name).parameters())
    assert all(p.requires_grad for p in tiny.decoder.up_blocks[-1].parameters())
    assert all(p.requires_grad for p in tiny.encoder.parameters())


def test_the_tiny_decoders_narrower_levels_start_from_the_vaes_first_channels() -> None:
    vae = load_vae()
    theirs = dict(vae.decoder.named_parameters())
    for name, parameter in make_tiny(vae).decoder.named_parameters():
        if name in theirs:
            assert torch.equal(parameter, theirs[name][tuple(slice(0, size) for size in parameter.shape)]), name
        else:  # where a level narrows, a shortcut the VAE's identity has not: the identity on the first channels
            assert ".conv_shortcut." in name
            expected = (torch.eye(*parameter.shape[:2]).reshape(parameter.shape) if parameter.ndim == 4
                        else torch.zeros_like(parameter))
            assert torch.equal(parameter, expected), name


def test_a_decoder_cut_to_its_own_width_is_itself() -> None:
    from server.models.autoencoder_tiny_kl import NarrowDecoder

    vae = load_vae()
    widths = tuple(vae.config.block_out_channels)
    same = NarrowDecoder(4, 3, widths, (vae.config.norm_num_groups,) * len(widths), vae.config.layers_per_block)
    cut_to_width(same, vae.decoder)
    latents = torch.randn(1, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(same(latents), vae.decoder(latents))


# --- the shipped model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline():
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(2)
    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_model_is_a_small_sd_pipeline(pipeline) -> None:
    assert NAME == "underpaint-demo"
    assert sum(p.stat().st_size for p in MODEL_DIR.glob("*/*.safetensors")) <= 25 * 1024 * 1024
    assert pipeline.vae_scale_factor == 8
    assert pipeline.unet.config.in_channels == pipeline.vae.config.latent_channels == 4
    assert pipeline.unet.dtype == pipeline.text_encoder.dtype == torch.float32
    assert pipeline.scheduler.config.beta_schedule == "scaled_linear"
    assert pipeline.scheduler.config.prediction_type == "v_prediction"
    # Almost nothing of the picture is left at the last timestep, so layout comes from the prompt.
    assert pipeline.scheduler.alphas_cumprod[-1] < 1e-4


def _generate(pipeline, prompt: str, side: int = 128, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return pipeline(prompt, height=side, width=side, num_inference_steps=12, guidance_scale=5.0,
                    generator=generator).images[0]


def test_generation_follows_the_prompt(pipeline) -> None:
    picture = _generate(pipeline, PROMPT)
    assert background_names(picture) == ("blue", "blue")
    red = find_blob(picture, "red")
    assert red is not None and red.position == "left" and red.area > 0.05, red
    assert red.x < 0.4


@pytest.mark.parametrize(
    ("prompt", "background", "colour"),
    [
        ("a large yellow star, black background", "black", "yellow"),
        ("a large white circle, purple background", "purple", "white"),
        ("a large orange triangle, blue background", "blue", "orange"),
    ],
)
def test_generation_paints_the_asked_colours(pipeline, prompt: str, background: str, colour: str) -> None:
    picture = _generate(pipeline, prompt)
    assert background_names(picture) == (background, background)
    assert find_blob(picture, colour) is not None


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("side", [64, 128])
def test_a_sketch_is_light_lines_on_black_around_its_shape(kind: str, side: int) -> None:
    for seed, position in enumerate(POSITIONS):
        shape = Shape(kind, "red", "large", position)
        drawn = sketch(shape, side, random.Random(seed))
        lines = np.asarray(drawn.convert("L"))
        assert drawn.size == (side, side) and lines.max() >= 150 and 0.01 < (lines > 64).mean() < 0.25
        x, y = shape.centre
        sx, sy = centroid(drawn)
        # A hand is off by a little, and a triangle's outline centres below its circle's centre.
        assert math.hypot(sx - x, sy - y) < 0.08, (kind, position, (sx, sy))
        assert line_picture(drawn) == drawn  # the server reads it as it is
