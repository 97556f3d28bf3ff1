"""Reference pictures: IP-Adapters and CLIP vision encoders found in every layout, the adapters' attention
equal to diffusers', and pictures from the real server in every mode, with masks, regions, live frames and
upscales; and the errors."""

from __future__ import annotations

import json
import shutil
import types
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from server.conditioning import reference
from server.imaging.outputs import parameters_text
from server.models.identify import clip_vision_config, identify_file
from server.models.ipadapters import FeatureCache, IPAdapters
from server.models.registry import Registry
from shared.client import Client, ServerError
from shared.messages import Control, Image, Live, Mask, Reference
from testing.conditioned import MODES, SIDE, canvas, pixels, request
from testing.serving import connected, url
from testing.tiny_models import _unet
from testing.tiny_references import tiny_ipadapter


@pytest.fixture(scope="module")
def client(models_dir: Path, references: Path, controlnets: Path, tmp_path_factory: pytest.TempPathFactory):
    with connected([models_dir, references, controlnets], tmp_path_factory.mktemp("server")) as client:
        yield client


# --- finding and loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "family", "variant", "features"), [
    ("tiny-sd15-ip-adapter", "ipadapter", "sd15", "plain", (("embeds", 24),)),
    ("tiny-sd15-ip-adapter-plus", "ipadapter", "sd15", "plus", (("hidden", 32),)),
    ("tiny-sd15-ip-adapter-plus-face", "ipadapter", "sd15", "face", (("hidden", 32),)),
    ("tiny-sd15-ip-adapter-full-face", "ipadapter", "sd15", "full_face", (("hidden", 32),)),
    ("tiny-sdxl-ip-adapter", "ipadapter", "sdxl", "plain", (("embeds", 24),)),  # in A1111's ControlNet/ folder
    ("tiny-sdxl-ip-adapter-plus", "ipadapter", "sdxl", "plus", (("hidden", 32),)),
    ("tiny-clip-vision", "clip_vision", None, None, (("hidden", 32), ("embeds", 24))),
])
def test_adapters_and_encoders_are_identified_in_both_layouts(references, name, kind, family, variant, features):
    registry = Registry([references])
    registry.scan()
    entry = registry.get(name, kind)
    assert (entry.family, entry.variant, entry.features) == (family, variant, features)
    assert (entry.info().kind, entry.info().variant) == (kind, variant)


def test_the_family_comes_from_the_cross_attention_width(tmp_path):
    from safetensors.torch import save_file

    for width, family in ((768, "sd15"), (2048, "sdxl"), (1024, None)):
        path = tmp_path / f"ip-adapter-{width}.safetensors"
        save_file({"image_proj.proj.weight": torch.zeros(8, 4), "image_proj.norm.weight": torch.zeros(2),
                   "ip_adapter.1.to_k_ip.weight": torch.zeros(2, width),
                   "ip_adapter.1.to_v_ip.weight": torch.zeros(2, width)}, str(path))
        entry = identify_file(path, "ipadapter")
        assert entry.kind == "ipadapter" and entry.family == family
        assert (entry.refused is None) == (family is not None)


def test_a_pickled_adapter_is_refused_unopened(references):
    registry = Registry([references])
    registry.scan()
    (entry,) = [e for e in registry.entries() if e.name == "old-ip-adapter"]
    assert entry.kind == "ipadapter" and "pickle" in entry.refused


def test_an_encoder_of_unknown_shape_without_its_config_is_refused(references, tmp_path):
    folder = tmp_path / "clip_vision"
    folder.mkdir()
    shutil.copy(references / "clip_vision" / "tiny-clip-vision.safetensors", folder / "mine.safetensors")
    entry = identify_file(folder / "mine.safetensors", "clip_vision")
    assert entry.kind == "clip_vision" and "mine.config.json" in entry.refused


@pytest.mark.parametrize(("hidden", "layers", "shipped", "projection"), [
    (1280, 32, "vit-h-14.json", 1024),
    (1664, 48, "vit-bigg-14.json", 1280),
    (1280, 24, None, None),
])
def test_the_shipped_encoder_configs_are_picked_by_shape(tmp_path, hidden, layers, shipped, projection):
    found = clip_vision_config(tmp_path / "x.safetensors", hidden, layers)
    if shipped is None:
        assert found is None
        return
    config = json.loads(found.read_text())
    assert found.name == shipped
    dims = (config["hidden_size"], config["num_hidden_layers"], config["projection_dim"])
    assert dims == (hidden, layers, projection)
    assert (config["image_size"], config["patch_size"]) == (224, 14)


def test_an_adapter_without_its_encoder_is_unsupported_naming_the_reference(models_dir, references, tmp_path):
    from server.errors import Unsupported

    shutil.copytree(references / "ipadapter", tmp_path / "ipadapter")
    registry = Registry([tmp_path, models_dir])
    registry.scan()
    with pytest.raises(Unsupported) as caught:
        IPAdapters(registry, torch.device("cpu"), torch.float32).choose("style", registry.get("tiny-sd15"), None,
                                                                         "reference[1]")
    assert caught.value.field == "reference[1]" and "clip_vision/" in str(caught.value)


def test_the_models_list_shows_adapters_and_encoders(client):
    listed = {(m.kind, m.name): m for m in client.models()}
    assert listed[("ipadapter", "tiny-sd15-ip-adapter-plus")].variant == "plus"
    assert listed[("ipadapter", "tiny-sdxl-ip-adapter")].family == "sdxl"
    assert ("clip_vision", "tiny-clip-vision") in listed


def test_image_features_are_cached_within_a_byte_budget():
    cache = FeatureCache(budget=3 * 400)
    for i in range(4):
        cache.put(("e", i), torch.zeros(100))  # 400 bytes each
    assert cache.used == 1200 and cache.get(("e", 0)) is None and cache.get(("e", 3)) is not None
    cache.put(("e", "big"), torch.zeros(1000))  # over the whole budget: not kept
    assert cache.get(("e", "big")) is None and cache.used == 1200


def test_an_unchanged_picture_runs_no_encoder_again(references):
    import PIL.Image

    registry = Registry([references])
    registry.scan()
    adapters = IPAdapters(registry, torch.device("cpu"), torch.float32)
    encoder = adapters.encoder(registry.get("tiny-clip-vision", "clip_vision"), "f")
    calls = []
    encoder.model.register_forward_hook(lambda *_: calls.append(1))
    picture = PIL.Image.new("RGB", (40, 30), (200, 10, 10))
    first, reused = adapters.picture_features(encoder, picture, "hidden")
    again, reused_again = adapters.picture_features(encoder, picture.copy(), "hidden")
    other, _ = adapters.picture_features(encoder, PIL.Image.new("RGB", (40, 30), (0, 10, 10)), "hidden")
    assert (reused, reused_again, len(calls)) == (False, True, 2)
    assert torch.equal(first, again) and not torch.equal(first, other)


# --- the attention ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "variant"), [("sd15", "plain"), ("sd15", "plus"), ("sd15", "full_face"),
                                                 ("sdxl", "plain")])
def test_the_adapter_adds_what_diffusers_ip_adapter_processor_adds(tmp_path, family, variant):
    from safetensors.torch import save_file

    weights = tiny_ipadapter(family, variant, seed=7)
    path = tmp_path / "adapter.safetensors"
    save_file(weights, str(path), metadata={"ss_base_model_version": "sd_v1" if family == "sd15" else "sdxl_base"})
    adapter = IPAdapters(Registry([]), torch.device("cpu"), torch.float32).adapter(identify_file(path), "f")
    torch.manual_seed(0)
    unet = _unet(family, "regular").eval()  # type: ignore[arg-type]
    theirs = _unet(family, "regular").eval()  # type: ignore[arg-type]
    theirs.load_state_dict(unet.state_dict())
    state = {part: {k.removeprefix(f"{part}."): v for k, v in weights.items() if k.startswith(f"{part}.")}
             for part in ("image_proj", "ip_adapter")}
    theirs._load_ip_adapter_weights([state])
    strength = 0.7
    for processor in theirs.attn_processors.values():
        if hasattr(processor, "scale"):
            processor.scale = [strength]
    features = torch.randn(2, 5, 32) if adapter.feature[0] == "hidden" else torch.randn(2, 24)
    with torch.no_grad():
        tokens = adapter.projection(features)
    active = reference.ActiveReference("a", "e", "m", "reference", strength, 0.0, 1.0, tokens, adapter,
                                       dict.fromkeys(range(len(adapter.layers)), 1.0), None, False)
    sample, context = torch.randn(2, 4, 8, 8), torch.randn(2, 77, unet.config.cross_attention_dim)
    extra = {}
    if family == "sdxl":
        extra = {"text_embeds": torch.randn(2, 32), "time_ids": torch.randn(2, 6)}
    pipe = types.SimpleNamespace(unet=unet, num_timesteps=1)
    with torch.no_grad():
        plain = unet(sample, 10, encoder_hidden_states=context, added_cond_kwargs=extra).sample
        with reference.applied(pipe, reference.References([active], guided=True)):
            ours = unet(sample, 10, encoder_hidden_states=context, added_cond_kwargs=extra).sample
        expected = theirs(sample, 10, encoder_hidden_states=context,
                          added_cond_kwargs={**extra, "image_embeds": [features[:, None]]}).sample
    assert (ours - plain).abs().max() > 1e-3
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_style_and_composition_act_in_instantstyles_blocks_of_the_real_unets():
    from diffusers import UNet2DConditionModel

    from server.models.loading import CONFIGS

    def named(family: str, mode: str) -> dict[str, float]:
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS / family / "unet"))
        layers = reference.cross_attention_layers(unet)
        found: dict[str, float] = {}
        for index, weight in reference.block_weights(unet, family, mode).items():
            found[".".join(layers[index].split(".")[:4])] = weight
        return found

    assert named("sdxl", "style") == {"up_blocks.0.attentions.1": 1.0}
    assert named("sdxl", "composition") == {"down_blocks.2.attentions.1": 1.0}
    assert named("sd15", "composition") == {"down_blocks.2.attentions.0": 0.25, "down_blocks.2.attentions.1": 1.0}
    style = named("sd15", "style")
    assert set(style) == {"down_blocks.0.attentions.0", "down_blocks.0.attentions.1", "down_blocks.1.attentions.0",
                          "down_blocks.1.attentions.1", "up_blocks.1.attentions.2",
                          *(f"up_blocks.{b}.attentions.{a}" for b in (2, 3) for a in range(3))}
    # Elsewhere every attention block, the middle one too.
    assert len(named("sd15", "reference")) == 16 and len(named("sdxl", "face")) == 4 + 1 + 6


def test_the_step_count_starts_again_with_each_pipeline_call():
    from server.conditioning.steps import StepCounter

    counter = StepCounter()
    job, refine = types.SimpleNamespace(num_timesteps=3), types.SimpleNamespace(num_timesteps=2)
    seen = []
    for pipe in (job, refine):
        for step in range(pipe.num_timesteps):
            seen.append((counter.step, counter.total(job)))
            counter.on_step_end(pipe, step, None, {})
    # The refine's first step is counted among the job pipeline's steps: its own count is known after it.
    assert seen == [(0, 3), (1, 3), (2, 3), (0, 3), (1, 2)]


# --- through the server ---------------------------------------------------------------------------------


def picture(seed: int = 0, side: int = 48) -> Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return Image(width=side, height=side, format="rgba8", data=pixels.tobytes(), x=5, y=3)


@pytest.mark.parametrize("mode", MODES)
def test_a_reference_changes_the_picture_in_every_mode_and_strength_0_or_no_step_changes_nothing(client, mode):
    fields = MODES[mode]
    plain = pixels(client, **fields)
    referenced = pixels(client, **fields, reference=[Reference(image=picture())])
    assert np.abs(referenced - plain).mean() > 1
    assert (pixels(client, **fields, reference=[Reference(image=picture())]) == referenced).all()
    assert (pixels(client, **fields, reference=[Reference(image=picture(), strength=0)]) == plain).all()
    # No step of the four lies wholly within [0.3, 0.6].
    assert (pixels(client, **fields, reference=[Reference(image=picture(), start=0.3, end=0.6)]) == plain).all()


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_each_mode_reads_the_picture_its_own_way(client, model):
    made = {mode: pixels(client, model=model, reference=[Reference(image=picture(), mode=mode, strength=1.0)])
            for mode in ("reference", "style", "composition")}
    plain = pixels(client, model=model)
    for mode, result in made.items():
        assert np.abs(result - plain).mean() > 0.5, mode
    assert np.abs(made["style"] - made["reference"]).mean() > 0.5
    assert np.abs(made["style"] - made["composition"]).mean() > 0.5


def test_a_face_reference_uses_a_face_adapter(client):
    result = client.generate(request(reference=[Reference(image=picture(), mode="face")]))
    assert result.info["references"][0]["model"] == "tiny-sd15-ip-adapter-plus-face"
    named = client.generate(request(reference=[Reference(image=picture(), mode="face",
                                                         model="tiny-sd15-ip-adapter-full-face")]))
    assert named.images[0].image.data != result.images[0].image.data


def test_several_references_add_up_and_are_recorded_after_the_controls(client):
    cross = Image(width=SIDE, height=SIDE, format="rgba8", data=bytes(SIDE * SIDE * 4))
    one = client.generate(request(reference=[Reference(image=picture())]))
    two = client.generate(request(reference=[Reference(image=picture()), Reference(
        image=picture(1), model="tiny-sd15-ip-adapter-plus", strength=0.8, start=0.25)],
        control=[Control(kind="scribble", image=cross)]))
    assert one.images[0].image.data != two.images[0].image.data
    listed = two.info["references"]
    assert [(r["model"], r["encoder"]) for r in listed] == [("tiny-sd15-ip-adapter", "tiny-clip-vision"),
                                                             ("tiny-sd15-ip-adapter-plus", "tiny-clip-vision")]
    text = parameters_text(two.info, 3)
    assert 'ControlNet 0: "Module: none, Model: tiny-sd15-scribble' in text
    assert ('ControlNet 2: "Module: ip-adapter_clip_h, Model: tiny-sd15-ip-adapter-plus, Weight: 0.8, '
            'Guidance Start: 0.25, Guidance End: 1.0"') in text


def test_a_masked_reference_changes_the_picture_mostly_inside_its_mask(client):
    side = 128  # the tiny UNet attends at an eighth of the latent's side: 4 x 4 at 64 px is too coarse a mask
    data = np.zeros((side, side), np.uint8)
    data[:, : side // 2] = 255
    left = Mask(width=side, height=side, format="a8", data=data.tobytes())
    size = {"width": side, "height": side}
    plain = pixels(client, **size)
    whole = pixels(client, **size, reference=[Reference(image=picture(), strength=1.0)])
    masked = pixels(client, **size, reference=[Reference(image=picture(), strength=1.0, mask=left)])
    change = np.abs(masked - plain)[..., :3].mean(axis=-1)
    inside, outside = change[:, : side // 2].mean(), change[:, side // 2:].mean()
    assert inside > 2 * outside and inside > 1
    assert np.abs(masked - whole).mean() > 0.5


def test_a_live_session_encodes_an_unchanged_reference_once(client):
    def frame(prompt: str) -> Live:
        return Live(id=uuid.uuid4().hex, session="r", mode="img2img", model="tiny-sd15", prompt=prompt,
                    image=canvas(), strength=0.5, steps=4, seed=1, reference=[Reference(image=picture(5))])

    first = client.generate(frame("a red circle"))
    second = client.generate(frame("a blue circle"))
    assert first.info["references"][0]["features_reused"] is False
    assert second.info["references"][0]["features_reused"] is True


def test_with_full_detail_and_in_an_upscale_the_reference_steers_the_refine(client):
    fields = {"width": 320, "height": 256, "fit_native": True, "detail": "full", "steps": 3}
    plain = client.generate(request(**fields))
    referenced = client.generate(request(**fields, reference=[Reference(image=picture())]))
    assert referenced.info["detail"] == "full" and referenced.images[0].image.data != plain.images[0].image.data
    side = 160  # enlarged to 320 px: 2 x 2 tiles of the tiny model's native 256 px
    start = Image(width=side, height=side, format="rgba8", data=bytes(range(256)) * (side * side * 4 // 256))
    data = np.zeros((side, side), np.uint8)
    data[:, : side // 2] = 255
    upscale = {"mode": "upscale", "image": start, "scale": 2, "strength": 0.5, "steps": 4}
    plain = pixels(client, **upscale)
    masked = pixels(client, **upscale, reference=[Reference(image=picture(), strength=1.0, mask=Mask(
        width=side, height=side, format="a8", data=data.tobytes()))])
    change = np.abs(masked - plain)[..., :3].mean(axis=-1)
    assert masked.shape == (2 * side, 2 * side, 4)
    # The mask is read under each tile (the tiles' overlaps and the refine's self-attention carry some of the
    # change across).
    assert change[:, :side].mean() > 1.5 * change[:, side:].mean()


@pytest.mark.parametrize(("fields", "code", "field"), [
    ({"reference": [Reference(image=picture(), model="tiny-sdxl-ip-adapter")]}, "unsupported", "reference[0].model"),
    ({"reference": [Reference(image=picture(), model="nope")]}, "unknown_model", "reference[0].model"),
    ({"reference": [Reference(image=picture(), mode="face", model="tiny-sd15-ip-adapter")]}, "unsupported",
     "reference[0].model"),
    ({"model": "tiny-sdxl", "reference": [Reference(image=picture(), mode="face")]}, "unsupported",
     "reference[0].mode"),
    ({"reference": [Reference(image=picture(), start=0.6, end=0.4)]}, "bad_request", "reference[0].end"),
    ({"mode": "upscale", "image": canvas(), "reference": [Reference(image=picture())]}, "bad_request", "reference"),
])
def test_errors_name_the_reference(client, fields, code, field):
    with pytest.raises(ServerError) as caught:
        client.generate(request(**fields))
    assert (caught.value.error.code, caught.value.error.field) == (code, field)


def test_without_an_adapter_a_reference_is_unsupported(server):
    with Client(url(server)) as artist, pytest.raises(ServerError) as caught:
        artist.generate(request(reference=[Reference(image=picture())]))
    assert (caught.value.error.code, caught.value.error.field) == ("unsupported", "reference[0]")


def test_the_demo_model_reads_its_own_adapter_and_paints_the_references_background(tmp_path):
    """Served alone, the demo model comes with its reference adapter and encoder: an empty prompt with a
    reference takes the reference's background (docs/demo-model.md: 97% of held-out references)."""
    from tools.demo_model.data import render
    from tools.demo_model.detect import background_names
    from tools.demo_model.reference import reference_scenes

    (tmp_path / "empty").mkdir()
    scenes = [r for r, _ in reference_scenes(4, 23)]
    with connected([tmp_path / "empty"], tmp_path) as artist:
        found = []
        for i, scene in enumerate(scenes):
            rgba = np.asarray(render(scene, 128).convert("RGBA"))
            image = Image(width=128, height=128, format="rgba8", data=rgba.tobytes())
            result = artist.generate(request(model="underpaint-demo", prompt="", width=128, height=128, steps=10,
                                             cfg_scale=3.0, seed=i, reference=[Reference(image=image, strength=1.0)]))
            picture = result.images[0].image
            pixels = np.frombuffer(picture.data, np.uint8).reshape(128, 128, 4)[..., :3]
            found.append(background_names(pixels) == scene.background.names)
        used = result.info["references"][0]
    assert (used["model"], used["encoder"]) == ("underpaint-demo-reference", "underpaint-demo-encoder")
    assert sum(found) >= 3, found
