"""What full detail keeps, with the demo model through the real server (docs/upscale.md): refining
the enlarged native picture at the canvas's size adds detail without moving or recolouring the
shapes the native pass composed."""

from __future__ import annotations

import uuid

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline

from server.config import ServerConfig
from server.imaging import latents
from server.models.demo import MODEL_DIR, NAME
from server.modes.tiled import tiled_unet
from shared.client import Client
from shared.messages import Generate
from testing.seams import seam_ratio
from testing.serving import running_server, url
from tools.demo_model.detect import find_blob, name_map

SIDE = 512  # 16 times the demo model's native 128² area
AGREEMENT = 0.9


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    config = ServerConfig(models=[tmp_path_factory.mktemp("no-models")], outputs=tmp_path_factory.mktemp("outputs"))
    with running_server(config) as server, Client(url(server), name="test") as client:
        yield client


def canvas(client: Client, detail: str, seed: int) -> np.ndarray:
    request = Generate(id=uuid.uuid4().hex, mode="txt2img", model=NAME, width=SIDE, height=SIDE, seed=seed,
                       steps=10, cfg_scale=3.0, scheduler="euler", fit_native=True, detail=detail,
                       prompt="a large red circle on the left, a small yellow square at the top, blue background")
    result = client.generate(request, timeout=600)
    assert result.info.get("detail") == detail
    image = result.images[0].image
    assert (image.width, image.height) == (SIDE, SIDE)
    return np.frombuffer(image.data, np.uint8).reshape(SIDE, SIDE, 4)[..., :3]


def test_full_detail_keeps_the_native_pass_shapes_and_colours(demo: Client) -> None:
    fast, full = canvas(demo, "fast", 3), canvas(demo, "full", 3)
    assert not np.array_equal(fast, full)
    # Detail: edges come out sharper than the enlargement's (the mean change from pixel to pixel).
    assert sharpness(full) > 1.1 * sharpness(fast), (sharpness(full), sharpness(fast))
    names_fast, names_full = name_map(fast), name_map(full)
    agreement = float((names_fast == names_full).mean())
    assert agreement >= AGREEMENT, agreement
    for colour in ("red", "yellow", "blue"):
        before, after = find_blob(fast, colour, names_fast), find_blob(full, colour, names_full)
        assert (before is None) == (after is None), colour
        if before is not None:
            assert after.position == before.position, (colour, before, after)
            assert abs(after.x - before.x) < 0.03 and abs(after.y - before.y) < 0.03, (colour, before, after)


def sharpness(rgb: np.ndarray) -> float:
    pixels = rgb.astype(np.float32)
    return float(np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean())


@pytest.fixture(scope="module")
def demo_img2img() -> StableDiffusionImg2ImgPipeline:
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(MODEL_DIR, safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# tile, overlap, feather (latent pixels; the demo model's native tile is 16) and the bound on the seam
# ratio: above 1 the tiles' edges change more from pixel to pixel than the picture inside them does.
SEAMS = [
    (16, 4, 4, 1.0),  # the server's choice: a quarter tile, feathered over all of it
    (12, 3, 3, 1.0),  # smaller tiles, same proportions
    (24, 6, 6, 1.0),  # larger tiles
    (16, 2, 2, 1.0),  # a thin overlap still hides them
]


@pytest.mark.parametrize(("tile", "overlap", "feather", "bound"), SEAMS)
def test_tiles_leave_no_seam_on_a_smooth_picture(demo_img2img, tile: int, overlap: int, feather: int,
                                                  bound: float) -> None:
    assert seams(demo_img2img, tile, overlap, feather) <= bound


def test_the_seam_metric_sees_tiles_that_do_not_overlap(demo_img2img) -> None:
    assert seams(demo_img2img, 16, 0, 0) > 1.5


def seams(pipe: StableDiffusionImg2ImgPipeline, tile: int, overlap: int, feather: int) -> float:
    """The seam ratio (testing/seams.py) of a smooth 256² gradient refined at half strength in tiles."""
    y, x = np.mgrid[0:256, 0:256] / 256
    smooth = PIL.Image.fromarray(np.dstack([120 + 80 * x, 150 + 60 * y, 200 - 50 * x * y]).astype(np.uint8))
    start = latents.encode(pipe, smooth)
    with tiled_unet(pipe.unet, tile, overlap=overlap, feather=feather):
        out = pipe(prompt="blue background", image=start, strength=0.5, num_inference_steps=8, guidance_scale=3.0,
                   generator=torch.Generator().manual_seed(0), output_type="latent").images
    (picture,) = latents.decode_in_tiles(pipe.vae, out)
    return seam_ratio(np.asarray(picture), tile, overlap, pipe.vae_scale_factor)
