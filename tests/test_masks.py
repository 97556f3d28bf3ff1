"""The pure image math of inpainting (server/masks.py), table-driven."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.imaging import masks


def square(size: int, x: int, y: int, side: int, value: int = 255) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[y:y + side, x:x + side] = value
    return mask


# --- bounds -------------------------------------------------------------------------------------

BOUNDS = [
    (np.zeros((5, 7), np.uint8), None),
    (square(10, 3, 4, 1), (3, 4, 1, 1)),
    (square(10, 0, 0, 10), (0, 0, 10, 10)),
    (np.pad(np.full((2, 3), 9, np.uint8), ((5, 1), (2, 4))), (2, 5, 3, 2)),
]


@pytest.mark.parametrize(("mask", "expected"), BOUNDS)
def test_bounds(mask, expected):
    assert masks.bounds(mask) == expected


# --- edge alpha ---------------------------------------------------------------------------------

# Alpha along a row leaving a hard square: (grow, feather, values from the square's edge outwards).
EDGE_ROWS = [
    (0, 4, [255, 191, 128, 64, 0, 0]),
    (2, 4, [255, 255, 255, 191, 128, 64, 0]),
    (1, 1, [255, 255, 0]),
    (3, 0, [255, 255, 255, 255, 0]),
    (0, 0, [255, 0]),
]


@pytest.mark.parametrize(("grow", "feather", "row"), EDGE_ROWS)
def test_edge_alpha_ramp(grow, feather, row):
    alpha = masks.edge_alpha(square(40, 10, 10, 10), grow, feather)
    assert alpha[15, 19:19 + len(row)].tolist() == row  # column 19 is the square's last one
    assert (alpha[10:20, 10:20] == 255).all()


def test_edge_alpha_is_zero_beyond_the_reach_and_steps_are_bounded():
    grow, feather = 3, 7
    mask = np.zeros((80, 80), np.uint8)
    mask[20:50, 30:35] = 255
    mask[40:45, 10:60] = 255  # a cross: concave corners too
    alpha = masks.edge_alpha(mask, grow, feather)
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[:80, :80]
    distance = np.min(np.hypot(yy[..., None] - ys, xx[..., None] - xs), axis=2)
    assert (alpha[distance >= grow + feather] == 0).all()
    assert (alpha[distance <= grow] == 255).all()
    steps = np.abs(np.diff(alpha.astype(int), axis=0)).max(), np.abs(np.diff(alpha.astype(int), axis=1)).max()
    assert max(steps) <= np.ceil(255 / feather)


SOFT = [
    # a soft selection keeps its own fade and never loses coverage
    np.tile(np.linspace(0, 255, 50).astype(np.uint8), (50, 1)),
    # a selection that is nowhere fully selected grows from its most-selected pixels
    square(50, 20, 20, 10, value=120),
]


@pytest.mark.parametrize("coverage", SOFT)
def test_edge_alpha_soft(coverage):
    alpha = masks.edge_alpha(coverage, 2, 6)
    assert (alpha >= coverage).all()
    assert alpha.max() == coverage.max()
    if coverage[0, 0] == 0 and coverage[25, 25] == 120:  # the square: grown at its own level, then faded
        assert alpha[25, 29 + 2] == 120 and 0 < alpha[25, 29 + 4] < 120 and alpha[25, 29 + 8] == 0


def test_edge_alpha_of_nothing_is_nothing():
    assert not masks.edge_alpha(np.zeros((4, 4), np.uint8), 5, 5).any()


# --- resampling ---------------------------------------------------------------------------------

RESIZES = [((8, 8), (4, 4)), ((8, 8), (16, 16)), ((37, 301), (24, 200)), ((10, 10), (10, 10))]


@pytest.mark.parametrize(("shape", "size"), RESIZES)
def test_resize_keeps_flat_colours_flat(shape, size):
    image = np.full((*shape, 3), (10, 200, 77), np.uint8)
    resized = masks.resize(image, size)
    assert resized.shape == (size[1], size[0], 3)
    assert (resized == (10, 200, 77)).all()


def test_resize_mask_is_in_unit_range_without_ringing():
    mask = square(16, 4, 4, 8)
    for size in ((64, 64), (4, 4), (5, 33)):
        resized = masks.resize_mask(mask, size)
        assert resized.dtype == np.float32 and resized.min() >= 0 and resized.max() <= 1


def test_resize_rgba_never_bleeds_transparent_colours():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)
    rgba[:, 4:] = (0, 255, 0, 0)  # invisible green must not tint the edge
    resized = masks.resize_rgba(rgba, (3, 3))
    visible = resized[..., 3] > 0
    assert (resized[visible][:, :3] == (255, 0, 0)).all()
    assert 0 < resized[1, 1, 3] < 255


# --- infill and the start picture -------------------------------------------------------------------


def test_infill_paints_holes_from_their_surroundings_and_keeps_the_rest():
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[:, :150] = (200, 40, 40)
    rgb[:, 150:] = (40, 40, 200)
    rgb[100:200, 20:120] = (0, 255, 0)  # an object inside the red half
    unknown = np.zeros((300, 300), bool)
    unknown[100:200, 20:120] = True
    filled = masks.infill(rgb, unknown)
    assert (filled[~unknown] == rgb[~unknown]).all()
    assert np.abs(filled[130:170, 50:90].astype(int) - (200, 40, 40)).max() <= 2


INFILL_EDGES = [
    ("nothing unknown", np.zeros((20, 20), bool)),
    ("everything unknown", np.ones((20, 20), bool)),
    ("a one-pixel known rim", np.pad(np.ones((1998, 1998), bool), 1)),
]


@pytest.mark.parametrize(("name", "unknown"), INFILL_EDGES, ids=[n for n, _ in INFILL_EDGES])
def test_infill_edge_cases(name, unknown):
    rgb = np.full((*unknown.shape, 3), 90, np.uint8)
    started = time.monotonic()
    filled = masks.infill(rgb, unknown)
    assert time.monotonic() - started < 2.0, "infill must stay fast on large holes"
    assert filled.shape == rgb.shape
    expected = masks.NEUTRAL if unknown.all() else 90
    assert (filled == expected).all()


def test_start_picture_infills_transparent_and_replaced_pixels_only():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (30, 160, 90, 255)  # painted half; the right half is empty canvas
    rgba[:, 30] = (30, 160, 90, 128)  # a soft stroke edge
    replace = np.zeros((64, 64), bool)
    replace[20:30, 5:15] = True
    rgba[20:30, 5:15] = (255, 255, 255, 255)  # the object to be replaced
    start = masks.start_picture(rgba, replace)
    assert (start[:, :30][~replace[:, :30]] == (30, 160, 90)).all()
    assert np.abs(start[:, 40:].astype(int) - (30, 160, 90)).max() <= 2  # continued, not a flat backdrop
    assert np.abs(start[20:30, 5:15].astype(int) - (30, 160, 90)).max() <= 2
    assert np.abs(start[:, 30].astype(int) - (30, 160, 90)).max() <= 2


# --- the per-step latent blend rule -------------------------------------------------------------------

THRESHOLDS = [
    (0, 4, 0.875),
    (3, 4, 0.125),
    (0, 1, 0.5),
    (9, 20, 0.525),
]


@pytest.mark.parametrize(("position", "length", "expected"), THRESHOLDS)
def test_step_threshold(position, length, expected):
    assert masks.step_threshold(position, length) == pytest.approx(expected)


@given(st.integers(1, 60), st.floats(0, 1))
@settings(max_examples=200, deadline=None)
def test_coverage_is_the_share_of_steps_denoised(length, coverage):
    active = [coverage > masks.step_threshold(p, length) for p in range(length)]
    steps = sum(active)
    assert abs(steps - coverage * length) <= 0.5
    # Once a pixel is handed to the model it stays with it: a denoising strength, not a flicker.
    assert active == sorted(active)


# --- colour matching and compositing -------------------------------------------------------------------


def test_ring_is_the_band_outside_the_result():
    alpha = square(40, 15, 15, 10)
    band = masks.ring(alpha, margin=2, width=3)
    assert not band[alpha > 0].any()
    assert band[20, 27] and band[20, 29] and not band[20, 26] and not band[20, 30]


COLOUR_OFFSETS = [
    ((100, 100, 100), (90, 105, 100), (10, -5, 0)),
    ((0, 0, 0), (0, 0, 0), (0, 0, 0)),
]


@pytest.mark.parametrize(("original", "generated", "expected"), COLOUR_OFFSETS)
def test_colour_offset(original, generated, expected):
    where = np.zeros((6, 6), bool)
    where[:2] = True
    a = np.full((6, 6, 4), (*original, 255), np.uint8)
    b = np.full((6, 6, 3), generated, np.float32)
    b[2:] = 0  # outside `where`: ignored
    assert masks.colour_offset(b, a, where).tolist() == pytest.approx(list(expected))
    assert masks.colour_offset(b, a, np.zeros((6, 6), bool)).tolist() == [0, 0, 0]


COMPOSITES = [
    # below, above, expected
    ((10, 20, 30, 255), (200, 100, 0, 0), (10, 20, 30, 255)),
    ((10, 20, 30, 255), (200, 100, 0, 255), (200, 100, 0, 255)),
    ((0, 0, 0, 255), (255, 255, 255, 128), (128, 128, 128, 255)),
    ((0, 0, 0, 0), (255, 0, 0, 128), (255, 0, 0, 128)),  # onto empty canvas
    ((7, 8, 9, 3), (1, 2, 3, 0), (7, 8, 9, 3)),  # untouched, even its colour under a low alpha
    ((0, 0, 255, 128), (255, 0, 0, 128), (170, 0, 85, 192)),
]


@pytest.mark.parametrize(("below", "above", "expected"), COMPOSITES)
def test_composite(below, above, expected):
    out = masks.composite(np.array([[below]], np.uint8), np.array([[above]], np.uint8))
    assert out[0, 0].tolist() == list(expected)


@given(st.binary(min_size=4 * 16, max_size=4 * 16), st.binary(min_size=4 * 16, max_size=4 * 16))
@settings(max_examples=100, deadline=None)
def test_composite_with_itself_changes_nothing_when_opaque(below, above):
    low = np.frombuffer(below, np.uint8).reshape(4, 4, 4).copy()
    low[..., 3] = 255
    top = low.copy()
    top[..., 3] = np.frombuffer(above, np.uint8).reshape(4, 4, 4)[..., 3]
    assert (masks.composite(low, top) == low).all()
