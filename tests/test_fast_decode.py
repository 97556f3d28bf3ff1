"""Fast decode for live frames: a tiny autoencoder from vae-approx/ replaces the VAE decode on request."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from diffusers import AutoencoderTiny

from server.config import ServerConfig
from server.imaging import latents
from server.models.registry import find_tiny_decoders
from shared.client import Client
from shared.messages import Generate, Image
from testing.serving import running_server, url


def tiny_autoencoder() -> AutoencoderTiny:
    torch.manual_seed(0)
    return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))


@pytest.fixture(scope="module")
def models_with_taesd(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fast-models")
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", root / "checkpoints" / "tiny-sd15")
    tiny_autoencoder().save_pretrained(root / "vae-approx" / "taesd")
    return root


def test_find_by_folder_and_family(tmp_path):
    tiny_autoencoder().save_pretrained(tmp_path / "VAE-approx" / "taesdxl")
    tiny_autoencoder().save_pretrained(tmp_path / "vae_approx" / "taesd")
    (tmp_path / "vae-approx" / "not-a-vae").mkdir(parents=True)
    found = find_tiny_decoders([tmp_path])
    assert found == {"sdxl": tmp_path / "VAE-approx" / "taesdxl", "sd15": tmp_path / "vae_approx" / "taesd"}


def test_decode_gives_pictures_at_eight_times_the_latent_size():
    pictures = latents.decode(tiny_autoencoder(), torch.randn(2, 4, 8, 12))
    assert [p.size for p in pictures] == [(96, 64), (96, 64)]


def frame(fast: bool) -> Generate:
    image = Image(width=64, height=64, format="rgba8", data=bytes((120, 80, 200, 255)) * 64 * 64)
    return Generate(id=f"f-{fast}-{time.monotonic_ns()}", mode="img2img", model="tiny-sd15", prompt="a red circle",
                    image=image, strength=0.5, steps=2, seed=4, fast_decode=fast)


def test_fast_decode_on_request_only(models_with_taesd, tmp_path):
    with running_server(ServerConfig(models=[models_with_taesd], outputs=tmp_path)) as server:
        with Client(url(server)) as client:
            full = client.generate(frame(False))
            fast = client.generate(frame(True))
    assert full.info["decoder"] == "vae" and fast.info["decoder"] == "taesd"
    assert full.images[0].image.data != fast.images[0].image.data
    assert (fast.images[0].image.width, fast.images[0].image.height) == (64, 64)


def test_without_weights_the_full_vae_decodes(models_dir, tmp_path):
    with running_server(ServerConfig(models=[models_dir], outputs=tmp_path)) as server:
        with Client(url(server)) as client:
            result = client.generate(frame(True))
    assert result.info["decoder"] == "vae"


def test_weights_added_later_are_used_once_the_models_are_listed_again(models_dir, tmp_path):
    """Where a family has no tiny autoencoder, its fast frames do not look for one again until the
    models folders are scanned again (`models`), as for a newly added checkpoint."""
    root = tmp_path / "models"
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", root / "checkpoints" / "tiny-sd15")
    with running_server(ServerConfig(models=[root], outputs=tmp_path / "outputs")) as server:
        with Client(url(server)) as client:
            assert client.generate(frame(True)).info["decoder"] == "vae"
            tiny_autoencoder().save_pretrained(root / "vae-approx" / "taesd")
            assert client.generate(frame(True)).info["decoder"] == "vae"
            client.models()
            assert client.generate(frame(True)).info["decoder"] == "taesd"
