"""Tiny autoencoders for live frames: which one a job uses (per family, present or absent), Apply's
full decode of a live frame's kept latents (bit for bit), an unchanged canvas encoded once, and a
stroke encoded in the area around it only (tests/test_changes.py has the details)."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import PIL.Image
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from safetensors.torch import save_file

from server.config import ServerConfig
from server.imaging import changes, payloads
from server.models import identify, tiny_autoencoders
from server.models.autoencoder_tiny_kl import AutoencoderTinyKL
from server.models.demo import TINY_AUTOENCODER_DIR
from server.models.registry import Registry, find_tiny_autoencoders
from shared.client import Client, ServerError
from shared.messages import Generate, Image, Live, Mask
from testing.live_encode import Encodes, shapes, stroked
from testing.serving import running_server, url
from testing.tiny_models import tiny_autoencoder


def save_taesd_file(path: Path) -> dict[str, torch.Tensor]:
    """TAESD's architecture (the class's defaults) as a lone weights file, as the installer places it."""
    torch.manual_seed(1)
    state = {key: value.contiguous() for key, value in AutoencoderTiny().state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path)
    return state


@pytest.fixture(scope="module")
def models(models_dir, tmp_path_factory):
    """tiny-sd15 and tiny-sdxl, with a tiny autoencoder for SD1.5 only."""
    root = tmp_path_factory.mktemp("tiny-ae-models")
    for name in ("tiny-sd15", "tiny-sdxl"):
        shutil.copytree(models_dir / "checkpoints" / name, root / "checkpoints" / name)
    tiny_autoencoder().save_pretrained(root / "vae-approx" / "taesd")
    return root


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    with running_server(ServerConfig(models=[models], outputs=tmp_path_factory.mktemp("out"))) as server:
        yield server


def canvas(shade: int = 100, side: int = 64) -> Image:
    return Image(width=side, height=side, format="rgba8", data=bytes((shade, 80, 200, 255)) * side * side)


def live(session: str = "s", model: str = "tiny-sd15", **fields) -> Live:
    defaults = {"mode": "img2img", "prompt": "a red circle", "image": canvas(), "strength": 0.5, "steps": 4,
                "seed": 4}
    return Live(id=uuid.uuid4().hex, session=session, model=model, **{**defaults, **fields})


def generate(model: str = "tiny-sd15", **fields) -> Generate:
    return Generate(id=uuid.uuid4().hex, mode="img2img", model=model, prompt="a red circle", image=canvas(),
                    strength=0.5, steps=4, seed=4, **fields)


def coders(info: dict) -> tuple[str, str]:
    return info["encoder"], info["decoder"]


# --- which autoencoder ----------------------------------------------------------------------------


def test_found_as_folders_or_weights_files_by_family(tmp_path):
    tiny_autoencoder().save_pretrained(tmp_path / "VAE-approx" / "taesdxl")
    save_taesd_file(tmp_path / "vae_approx" / "taesd.safetensors")
    (tmp_path / "vae-approx" / "not-a-vae").mkdir(parents=True)
    save_file({"weight": torch.zeros(2)}, tmp_path / "vae-approx" / "other.safetensors")
    found = find_tiny_autoencoders([tmp_path])
    assert found == {"sdxl": tmp_path / "VAE-approx" / "taesdxl", "sd15": tmp_path / "vae_approx" / "taesd.safetensors"}


def test_a_weights_file_alone_loads_with_taesds_architecture(tmp_path):
    state = save_taesd_file(tmp_path / "taesd.safetensors")
    module = tiny_autoencoders.load(tmp_path / "taesd.safetensors", torch.device("cpu"), torch.float32)
    assert all(torch.equal(module.state_dict()[key], value) for key, value in state.items())


@pytest.mark.parametrize("widths", [(16, 32, 64, 64), (8, 8, 16), (32,)])
def test_with_the_vaes_group_norms_the_narrow_decoder_is_the_vaes(widths):
    """The demo model's tiny autoencoder copies its VAE's lowest decoder level: part for part (names and
    shapes) and pixel for pixel, given the VAE's groups everywhere, its decoder is diffusers' own."""
    torch.manual_seed(0)
    blocks = len(widths)
    vae = AutoencoderKL(block_out_channels=widths, down_block_types=("DownEncoderBlock2D",) * blocks,
                        up_block_types=("UpDecoderBlock2D",) * blocks, layers_per_block=1, norm_num_groups=8,
                        mid_block_add_attention=False).eval()
    tiny = AutoencoderTinyKL(decoder_block_out_channels=widths, decoder_norm_groups=(8,) * blocks).eval()
    decoding = ("decoder.", "post_quant_conv.")
    theirs = {key: value for key, value in vae.state_dict().items() if key.startswith(decoding)}
    own = tiny.state_dict()
    assert {key for key in own if key.startswith(decoding)} == theirs.keys()
    tiny.load_state_dict(own | theirs)
    latents = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        assert torch.equal(tiny.decode(latents).sample, vae.decode(latents).sample)


def test_a_folder_of_the_demo_models_kind_is_found_loaded_and_codes_live_frames(models_dir, tmp_path):
    """The demo model's kind (AutoencoderTinyKL) is read from its folder's config and serves a family
    as AutoencoderTiny does; Apply still decodes with the full VAE."""
    torch.manual_seed(0)
    saved = AutoencoderTinyKL(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8, 8, 16, 16),
                              decoder_norm_groups=(2, 2, 4, 4), scaling_factor=0.5)
    root = tmp_path / "models"
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", root / "checkpoints" / "tiny-sd15")
    saved.save_pretrained(root / "vae-approx" / "own")
    assert find_tiny_autoencoders([root]) == {"sd15": root / "vae-approx" / "own"}
    module = tiny_autoencoders.load(root / "vae-approx" / "own", torch.device("cpu"), torch.float32)
    assert isinstance(module, AutoencoderTinyKL) and module.config.scaling_factor == 0.5
    assert all(torch.equal(module.state_dict()[key], value) for key, value in saved.state_dict().items())
    with running_server(ServerConfig(models=[root], outputs=tmp_path / "outputs")) as server:
        with Client(url(server)) as client:
            frame = client.generate(live(session="kl"))
            applied = client.finalize(frame.id)
    assert (coders(frame.info), frame.info["tiny_autoencoder"]) == (("tiny", "tiny"), "own")
    assert applied.info["decoder"] == "vae"
    assert [i.image.data for i in applied.images] != [i.image.data for i in frame.images]


def test_live_frames_use_the_tiny_autoencoder_where_the_family_has_one(served):
    with Client(url(served)) as client:
        assert coders(client.generate(live()).info) == ("tiny", "tiny")
        assert client.generate(live()).info["tiny_autoencoder"] == "taesd"
        # Not for SDXL: the folder has no TAESDXL, and SD1.5's does not fit SDXL's latents.
        assert coders(client.generate(live(model="tiny-sdxl", session="xl")).info) == ("vae", "vae")
        # `generate` uses the full VAE unless it asks; a live frame may ask for the full VAE.
        assert coders(client.generate(generate()).info) == ("vae", "vae")
        assert coders(client.generate(generate(autoencoder="tiny")).info) == ("tiny", "tiny")
        assert coders(client.generate(live(autoencoder="full")).info) == ("vae", "vae")


def test_sdxl_live_frames_use_taesdxl_and_sd15_ones_do_not(models_dir, tmp_path):
    root = tmp_path / "models"
    for name in ("tiny-sd15", "tiny-sdxl"):
        shutil.copytree(models_dir / "checkpoints" / name, root / "checkpoints" / name)
    tiny_autoencoder().save_pretrained(root / "vae-approx" / "taesdxl")
    with running_server(ServerConfig(models=[root], outputs=tmp_path / "outputs")) as server:
        with Client(url(server)) as client:
            sdxl = client.generate(live(model="tiny-sdxl", session="xl")).info
            sd15 = client.generate(live()).info
    assert (coders(sdxl), sdxl["tiny_autoencoder"]) == (("tiny", "tiny"), "taesdxl")
    assert coders(sd15) == ("vae", "vae") and "tiny_autoencoder" not in sd15


def test_without_a_tiny_autoencoder_the_full_vae_codes_live_frames(server, client):
    assert coders(client.generate(live()).info) == ("vae", "vae")


def test_the_demo_model_uses_its_own_tiny_autoencoder_never_sd15s(tmp_path):
    """Its latents are its own VAE's: SD1.5's TAESD in the models folder is never used for it, with or
    without a tiny autoencoder of its own (TINY_AUTOENCODER_DIR, where one is shipped)."""
    save_taesd_file(tmp_path / "vae-approx" / "taesd.safetensors")
    registry = Registry([tmp_path])
    registry.scan()
    demo = registry.get("underpaint-demo")
    own = tmp_path / "demo-tiny-autoencoder"
    assert registry.tiny_autoencoder(replace(demo, tiny_autoencoder=own)) == own
    assert registry.tiny_autoencoder(replace(demo, tiny_autoencoder=None)) is None
    shipped = TINY_AUTOENCODER_DIR if identify.is_tiny_autoencoder(TINY_AUTOENCODER_DIR) else None
    assert registry.tiny_autoencoder(demo) == shipped


def test_weights_added_later_are_used_once_the_models_are_listed_again(models_dir, tmp_path):
    """Where a family has no tiny autoencoder, its live frames do not look for one again until the models
    folders are scanned again (`models`), as for a newly added checkpoint."""
    root = tmp_path / "models"
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", root / "checkpoints" / "tiny-sd15")
    with running_server(ServerConfig(models=[root], outputs=tmp_path / "outputs")) as server:
        with Client(url(server)) as client:
            assert client.generate(live()).info["decoder"] == "vae"
            tiny_autoencoder().save_pretrained(root / "vae-approx" / "taesd")
            assert client.generate(live()).info["decoder"] == "vae"
            client.models()
            assert client.generate(live()).info["decoder"] == "tiny"


def test_a_tiny_autoencoder_that_cannot_be_loaded_leaves_live_frames_on_the_full_vae(models_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", root / "checkpoints" / "tiny-sd15")
    # It has the names of a tiny autoencoder's tensors, but not their shapes.
    (root / "vae-approx").mkdir()
    save_file({name: torch.zeros(1) for name in identify.TINY_AUTOENCODER_KEYS},
              root / "vae-approx" / "taesd.safetensors")
    with running_server(ServerConfig(models=[root], outputs=tmp_path / "outputs")) as server:
        with Client(url(server)) as client:
            assert coders(client.generate(live()).info) == ("vae", "vae")


# --- finalize: Apply at full quality ---------------------------------------------------------------


def full_decode(server, frame_id: str) -> list[bytes]:
    """The kept latents of `frame_id` decoded by the model's VAE with diffusers' own calls, made into
    the frame's layers: what `finalize` must give, bit for bit."""
    owner = next(connection.number for connection in server.connections)
    kept = server.generator.sessions.frame(owner, frame_id)
    vae = server.cache.get(kept.entry).vae
    processor = server.cache.get(kept.entry).image_processor
    with torch.no_grad():
        pixels = vae.decode(kept.latents / vae.config.scaling_factor).sample
    return [payloads.from_pil(kept.mode.finish(picture), "rgba8").data
            for picture in processor.postprocess(pixels, output_type="pil")]


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_finalize_decodes_the_kept_latents_with_the_full_vae_bit_for_bit(served, mode):
    fields = {}
    if mode == "inpaint":
        fields = {"mode": "inpaint", "image": canvas(side=96),
                  "mask": Mask(x=24, y=24, width=48, height=48, format="a8", data=b"\xff" * 48 * 48)}
    with Client(url(served)) as client:
        frame = client.generate(live(session=f"finalize-{mode}", **fields))
        applied = client.finalize(frame.id)
        expected = full_decode(served, frame.id)
    assert frame.info["decoder"] == "tiny"
    assert applied.info["decoder"] == "vae" and applied.info["finalized"] is True
    assert applied.info["seeds"] == frame.info["seeds"] and applied.info["prompt"] == frame.info["prompt"]
    placed = [(i.image.x, i.image.y, i.image.width, i.image.height) for i in frame.images]
    assert [(i.image.x, i.image.y, i.image.width, i.image.height) for i in applied.images] == placed
    assert [i.image.data for i in applied.images] == expected
    assert expected != [i.image.data for i in frame.images]  # the preview was the tiny decode


def test_only_the_latest_frame_of_a_session_can_be_finalized_by_its_connection(served):
    with Client(url(served)) as client:
        first = client.generate(live(session="latest"))
        second = client.generate(live(session="latest", prompt="a blue square"))
        with pytest.raises(ServerError) as older:
            client.finalize(first.id)
        with pytest.raises(ServerError) as unknown:
            client.finalize("no-such-frame")
        with Client(url(served)) as other, pytest.raises(ServerError) as elsewhere:
            other.finalize(second.id)
        assert client.finalize(second.id).info["finalized"] is True
    for error in (older, unknown, elsewhere):
        assert (error.value.error.code, error.value.error.field) == ("not_found", "id")
    assert "only the latest result of each live session" in older.value.error.message


# --- encode once per unchanged canvas ---------------------------------------------------------------


def test_an_unchanged_canvas_is_encoded_once_and_gives_the_same_latents(served):
    with Client(url(served)) as client:
        reused = [client.generate(live(session="enc", **fields)).info["latents_reused"] for fields in (
            {},
            {"prompt": "a blue square"},  # the prompt only: not encoded again
            {"strength": 0.75},  # the strength only
            {"image": canvas(shade=180)},  # a stroke: encoded
            {},  # back to the first canvas: only the last one is kept
        )]
        changed_prompt = client.generate(live(session="enc", prompt="a green star"))
        other_coder = client.generate(live(session="enc", autoencoder="full"))  # its own latents
        fresh = client.generate(live(session="enc-fresh", prompt="a green star"))
    assert reused == [False, True, True, False, False]
    assert changed_prompt.info["latents_reused"] is True
    assert other_coder.info["latents_reused"] is False and fresh.info["latents_reused"] is False
    # Reused latents are the latents: the frame is what a fresh encode gives, pixel for pixel.
    assert changed_prompt.images[0].image.data == fresh.images[0].image.data


def rgba(picture: PIL.Image.Image) -> Image:
    return Image(width=picture.width, height=picture.height, format="rgba8", data=picture.convert("RGBA").tobytes())


def test_a_stroke_is_encoded_in_the_area_around_it(served):
    before = shapes(256, 256)
    after = stroked(before, 120, 118)
    with Client(url(served)) as client:
        first = client.generate(live(session="stroke", image=rgba(before)))
        encodes = Encodes(served.generator.tiny_autoencoders.get(served.registry.get("tiny-sd15")).module.encoder)
        try:
            patched = client.generate(live(session="stroke", image=rgba(after)))
            whole = client.generate(live(session="stroke-fresh", image=rgba(after)))
            resized = client.generate(live(session="stroke", image=rgba(shapes(256, 248))))
            sizes = encodes.take()
        finally:
            encodes.close()
        full = [client.generate(live(session="stroke-full", image=rgba(picture), autoencoder="full")).info
                for picture in (before, after)]
    assert first.info["start_encode"] == "whole" and first.info["latents_reused"] is False
    assert "tile_error" not in first.info
    assert patched.info["start_encode"] == "tiles" and patched.info["latents_reused"] is False
    assert 0 < patched.info["tile_error"] <= changes.BOUND
    assert sizes == [(152, 168), (256, 256), (248, 256)]  # the stroke's area; a fresh session; a new size
    assert whole.info["start_encode"] == resized.info["start_encode"] == "whole"
    assert [info["start_encode"] for info in full] == ["whole", "whole"]  # the full VAE is never patched
