"""Regional prompts: mask placement, the attention bias, the processor, and pictures from the real server."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from server.conditioning import coverage, regions
from server.conditioning.tile import running_on
from shared.client import Client
from shared.crop import Rect
from shared.messages import Generate, Image, Mask, Region
from testing.tiny_models import tiny_pipeline


def mask(width: int, height: int, value: int = 255, x: int = 0, y: int = 0) -> Mask:
    return Mask(width=width, height=height, format="a8", data=bytes([value]) * (width * height), x=x, y=y)


# --- masks and bias ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("latent", "queries", "size"), [
    ((8, 8), 64, (8, 8)),
    ((8, 8), 16, (4, 4)),
    ((8, 8), 4, (2, 2)),
    ((9, 6), 54, (9, 6)),
    ((9, 6), 15, (5, 3)),  # halving rounds up, like a stride-2 convolution with padding 1
    ((9, 6), 6, (3, 2)),
    ((128, 96), 768, (32, 24)),
])
def test_level_size(latent, queries, size):
    assert coverage.level_size(latent, queries) == size


def test_level_size_refuses_a_length_no_level_has():
    with pytest.raises(ValueError, match="50 positions"):
        coverage.level_size((8, 8), 50)


def test_masks_are_placed_on_the_canvas_and_cropped_to_the_frame():
    frame = Rect(100, 100, 64, 64)
    planes = regions.latent_masks([
        Region(mask=mask(32, 32, x=84, y=84), prompt="a"),  # overlaps the frame's top-left 16 px
        Region(mask=mask(64, 64, value=128, x=100, y=100), prompt="b"),  # soft, the whole frame
        Region(mask=mask(10, 10, x=0, y=0), prompt="c"),  # nowhere near it
    ], frame, (8, 8))
    assert planes.shape == (3, 8, 8)
    expected = torch.zeros(8, 8)
    expected[:2, :2] = 1.0
    assert torch.equal(planes[0], expected)
    assert torch.allclose(planes[1], torch.full((8, 8), 128 / 255))
    assert not planes[2].any()


def test_bias_is_zero_inside_minus_10000_outside_and_log_coverage_between():
    masks = torch.zeros(2, 4, 4)
    masks[0, :, :2] = 1.0
    masks[1] = 0.5
    restriction = regions.Restriction(masks, spans=[(3, 5), (5, 6)], tokens=6)
    bias = restriction.bias(16, torch.float32, torch.device("cpu"))
    assert bias.shape == (1, 1, 16, 6)
    assert bias.stride(-2) % regions.ALIGN == 0
    rows = bias[0, 0].reshape(4, 4, 6)
    assert not rows[..., :3].any()  # the global prompt's tokens attend everywhere
    assert (rows[:, :2, 3:5] == 0).all() and (rows[:, 2:, 3:5] == regions.OUTSIDE).all()
    assert torch.allclose(rows[..., 5], torch.full((4, 4), float(np.log(0.5))))
    # One resolution down the mask is pooled: half of each 2x2 block is covered.
    pooled = restriction.bias(4, torch.float32, torch.device("cpu"))[0, 0].reshape(2, 2, 6)
    assert torch.allclose(pooled[:, 0, 3], torch.zeros(2)) and (pooled[:, 1, 3] == regions.OUTSIDE).all()


# --- the attention processor ---------------------------------------------------------------------------


@pytest.fixture
def attention():
    torch.manual_seed(0)
    return Attention(query_dim=32, cross_attention_dim=16, heads=2, dim_head=8).eval()


def attend(attention, hidden, context, restriction=None):
    processor = AttnProcessor2_0() if restriction is None else regions.RegionalCrossAttention(restriction)
    with torch.no_grad():
        return processor(attention, hidden, context)


def test_tokens_outside_their_region_are_ignored(attention):
    hidden, global_tokens, region_tokens = torch.randn(2, 16, 32), torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    restriction = regions.Restriction(torch.zeros(1, 4, 4), spans=[(5, 8)], tokens=8)
    both = attend(attention, hidden, torch.cat([global_tokens, region_tokens], dim=1), restriction)
    assert torch.allclose(both, attend(attention, hidden, global_tokens), atol=1e-6)


def test_tokens_inside_their_region_are_attended(attention):
    hidden, global_tokens, region_tokens = torch.randn(2, 16, 32), torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    masks = torch.zeros(1, 4, 4)
    masks[0, :2] = 1.0  # the top half
    restriction = regions.Restriction(masks, spans=[(5, 8)], tokens=8)
    out = attend(attention, hidden, torch.cat([global_tokens, region_tokens], dim=1), restriction)
    plain = attend(attention, hidden, global_tokens)
    top, bottom = slice(0, 8), slice(8, 16)
    assert not torch.allclose(out[:, top], plain[:, top], atol=1e-3)
    assert torch.allclose(out[:, bottom], plain[:, bottom], atol=1e-6)
    # Exactly the unrestricted attention over all tokens where the region covers.
    full = attend(attention, hidden, torch.cat([global_tokens, region_tokens], dim=1))
    assert torch.allclose(out[:, top], full[:, top], atol=1e-6)


def test_a_repeated_prompt_in_a_region_changes_nothing(attention):
    # Why a region without its own negative prompt repeats the global negative.
    hidden, tokens = torch.randn(2, 16, 32), torch.randn(2, 5, 16)
    restriction = regions.Restriction(torch.rand(1, 4, 4), spans=[(5, 10)], tokens=10)
    twice = attend(attention, hidden, torch.cat([tokens, tokens], dim=1), restriction)
    assert torch.allclose(twice, attend(attention, hidden, tokens), atol=1e-6)


def test_restricted_changes_only_cross_attention_and_restores():
    unet = tiny_pipeline("sd15").unet
    before = dict(unet.attn_processors)
    restriction = regions.Restriction(torch.ones(1, 8, 8), spans=[(77, 154)], tokens=154)
    with regions.restricted(unet, restriction):
        during = unet.attn_processors
        assert all(isinstance(p, regions.RegionalCrossAttention) == name.endswith("attn2.processor")
                   for name, p in during.items())
        assert any(name.endswith("attn2.processor") for name in during)
    assert unet.attn_processors == before
    with regions.restricted(unet, None):
        assert unet.attn_processors == before


# --- pictures ------------------------------------------------------------------------------------------

SIDE = 128


def request(**fields) -> Generate:
    # A high CFG scale makes the random tiny models follow their prompts visibly.
    defaults = {"id": uuid.uuid4().hex, "mode": "txt2img", "model": "tiny-sd15", "prompt": "a red circle",
                "width": SIDE, "height": SIDE, "steps": 4, "seed": 1, "cfg_scale": 12.0}
    return Generate(**{**defaults, **fields})


def picture(client: Client, **fields) -> np.ndarray:
    image = client.generate(request(**fields)).images[0].image
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4)[..., :3].astype(float)


def left_half(x: int = 0, y: int = 0) -> Mask:
    data = np.zeros((SIDE, SIDE), np.uint8)
    data[:, : SIDE // 2] = 255
    return Mask(width=SIDE, height=SIDE, format="a8", data=data.tobytes(), x=x, y=y)


def inside_and_outside(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    change = np.abs(a - b).mean(axis=-1)
    return change[:, : SIDE // 2].mean(), change[:, SIDE // 2:].mean()


FOREST = "a green forest, trees, leaves, moss"


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_a_region_changes_pixels_inside_its_mask_more_than_outside(client, model):
    plain = picture(client, model=model)
    regional = picture(client, model=model, regions=[Region(mask=left_half(), prompt=FOREST)])
    inside, outside = inside_and_outside(plain, regional)
    assert inside > 1.5 * outside > 0


def test_regions_in_img2img_are_placed_by_canvas_coordinates(client):
    source = Image(width=SIDE, height=SIDE, format="rgba8", data=bytes([90, 140, 200, 255]) * SIDE * SIDE,
                   x=1000, y=2000)
    fields = {"mode": "img2img", "image": source, "strength": 0.8}
    plain = picture(client, **fields)
    regional = picture(client, **fields, regions=[Region(mask=left_half(1000, 2000), prompt=FOREST)])
    inside, outside = inside_and_outside(plain, regional)
    assert inside > 1.5 * outside > 0
    # A mask reaching beyond the picture is cropped to it: the same coverage, the same pixels.
    wide = Mask(width=SIDE // 2 + 300, height=SIDE + 300, format="a8",
                data=bytes([255]) * ((SIDE // 2 + 300) * (SIDE + 300)), x=700, y=1900)
    assert np.array_equal(picture(client, **fields, regions=[Region(mask=wide, prompt=FOREST)]), regional)


def test_a_region_with_an_empty_mask_changes_next_to_nothing(client):
    plain = picture(client)
    empty = picture(client, regions=[Region(mask=mask(SIDE, SIDE, value=0), prompt=FOREST)])
    assert np.abs(plain - empty).max() <= 1


def test_three_regions_and_region_negatives(client):
    result = client.generate(request(regions=[
        Region(mask=left_half(), prompt=FOREST, negative_prompt="water"),
        Region(mask=mask(SIDE // 2, SIDE, x=SIDE // 2), prompt="a blue lake (water:1.2)"),
        Region(mask=mask(SIDE, SIDE // 4, value=128), prompt="clouds BREAK sky"),
    ]))
    assert result.images[0].image.width == SIDE


def test_regions_in_inpaint(client):
    source = Image(width=SIDE, height=SIDE, format="rgba8", data=bytes([90, 140, 200, 255]) * SIDE * SIDE)
    fields = {"mode": "inpaint", "image": source, "mask": mask(SIDE, SIDE), "strength": 1.0}
    plain = client.generate(request(**fields))
    regional = client.generate(request(**fields, regions=[Region(mask=left_half(), prompt=FOREST)]))
    assert regional.images[0].image.data != plain.images[0].image.data


@pytest.mark.parametrize(("tile", "expected"), [
    (None, [[0, 1], [2, 3]]),  # the whole picture: the masks as placed
    # A tile of a latent twice the size: stretched (bilinear: 0, 1 become 0, 0.25, 0.75, 1), then cut.
    ((Rect(0, 0, 2, 2), 4, 4), [[0, 0.25], [0.5, 0.75]]),
    ((Rect(2, 2, 2, 2), 4, 4), [[2.25, 2.5], [2.75, 3]]),
    ((Rect(1, 0, 2, 1), 2, 4), [[0.25, 0.75]]),  # only wider: stretched across, cut at an odd offset
])
def test_coverage_reads_the_masks_under_the_tile_the_unet_runs_on(tile, expected):
    masks = coverage.Coverage(torch.tensor([[[0.0, 1.0], [2.0, 3.0]]]))
    if tile is None:
        found = masks.pooled(len(expected) * len(expected[0]))
    else:
        box, height, width = tile
        with running_on(box, height, width):
            found = masks.pooled(box.width * box.height)
    assert found.reshape(len(expected), -1).tolist() == expected
    assert masks.pooled(4).reshape(2, 2).tolist() == [[0, 1], [2, 3]]  # the whole again after the block

