"""The tile rule in shared/tiles.py: what is cut where, and how overlaps are weighed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.crop import Rect
from shared.tiles import grid, ramp, spans

SPANS = [
    # length, tile, overlap, expected spans
    (64, 64, 16, [(0, 64)]),  # exactly one tile
    (40, 64, 16, [(0, 40)]),  # shorter than a tile: one tile of the length
    (65, 64, 16, [(0, 64), (1, 65)]),  # one unit more: two tiles, overlapping far more than asked
    (112, 64, 16, [(0, 64), (48, 112)]),  # two tiles overlapping exactly as asked
    (113, 64, 16, [(0, 64), (24, 88), (49, 113)]),  # one more: three, spread evenly
    (512, 64, 16, [(0, 64), (45, 109), (90, 154), (134, 198), (179, 243), (224, 288), (269, 333),
                   (314, 378), (358, 422), (403, 467), (448, 512)]),  # 4096 px in SD1.5 latents
    (100, 10, 0, [(i, i + 10) for i in range(0, 100, 10)]),  # no overlap: side by side
    (7, 3, 2, [(0, 3), (1, 4), (2, 5), (3, 6), (4, 7)]),  # overlap one less than the tile: a unit apart
]


@pytest.mark.parametrize(("length", "tile", "overlap", "expected"), SPANS)
def test_spans(length: int, tile: int, overlap: int, expected: list[tuple[int, int]]) -> None:
    assert spans(length, tile, overlap) == expected


@pytest.mark.parametrize(("length", "tile", "overlap", "message"), [
    (0, 64, 16, "length"), (64, 0, 0, "tile"), (100, 64, 64, "overlap"), (100, 64, -1, "overlap"),
])
def test_impossible_spans_are_refused(length: int, tile: int, overlap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spans(length, tile, overlap)


FITTED = [
    # length, longest tile, overlap, expected spans with fit
    (512, 256, 16, [(0, 182), (165, 347), (330, 512)]),  # the tiny ESRGAN's input at 1024²: 182, not 256
    (128, 72, 18, [(0, 55), (36, 91), (73, 128)]),  # SD1.5-sized VAE tiles on 1024² latents: 55, not 72
    (100, 256, 16, [(0, 100)]),  # shorter than a tile: the whole length
    (112, 64, 16, [(0, 64), (48, 112)]),  # two tiles overlapping exactly as asked: nothing to shrink
    (113, 64, 16, [(0, 49), (32, 81), (64, 113)]),  # three of 64 would overlap by 40; of 49, by 17 and 16
]


@pytest.mark.parametrize(("length", "tile", "overlap", "expected"), FITTED)
def test_fitted_spans(length: int, tile: int, overlap: int, expected: list[tuple[int, int]]) -> None:
    assert spans(length, tile, overlap, fit=True) == expected


def test_grid_goes_row_by_row() -> None:
    assert grid(100, 60, 64, 16) == [Rect(0, 0, 64, 60), Rect(36, 0, 64, 60)]
    assert grid(112, 112, 64, 16) == [Rect(0, 0, 64, 64), Rect(48, 0, 64, 64),
                                      Rect(0, 48, 64, 64), Rect(48, 48, 64, 64)]


RAMPS = [
    # start, end, length, feather, expected
    (0, 4, 4, 2, [1.0, 1.0, 1.0, 1.0]),  # the whole picture: no inner edge
    (0, 4, 10, 2, [1.0, 1.0, 0.75, 0.25]),  # the first tile: fades out towards the next
    (6, 10, 10, 2, [0.25, 0.75, 1.0, 1.0]),  # the last tile: fades in from the previous
    (3, 7, 10, 2, [0.25, 0.75, 0.75, 0.25]),  # a middle tile: both
    (3, 6, 10, 4, [0.125, 0.375, 0.125]),  # shorter than two feathers: the lower of both ramps
    (3, 7, 10, 0, [1.0, 1.0, 1.0, 1.0]),  # no feather: a plain average
]


@pytest.mark.parametrize(("start", "end", "length", "feather", "expected"), RAMPS)
def test_ramp(start: int, end: int, length: int, feather: int, expected: list[float]) -> None:
    assert ramp(start, end, length, feather) == expected


@st.composite
def tilings(draw: st.DrawFn) -> tuple[int, int, int]:
    tile = draw(st.integers(1, 300))
    return draw(st.integers(1, 5000)), tile, draw(st.integers(0, tile - 1))


@given(tilings())
@settings(max_examples=500, deadline=None)
def test_span_properties(case: tuple[int, int, int]) -> None:
    length, tile, overlap = case
    found = spans(length, tile, overlap)
    assert found[0][0] == 0 and found[-1][1] == length
    assert all(end - start == min(tile, length) for start, end in found)
    for (start, end), (next_start, _) in zip(found, found[1:], strict=False):
        assert start < next_start and end - next_start >= overlap  # covered, overlapping as asked
    # As few tiles as that allows: one fewer could not cover the length with that overlap.
    fewer = len(found) - 1
    assert fewer == 0 or tile + (fewer - 1) * (tile - overlap) < length
    # Cutting the same picture again gives the same tiles (the server and the bench agree).
    assert spans(length, tile, overlap) == found


@given(tilings())
@settings(max_examples=500, deadline=None)
def test_fitted_tiles_are_the_shortest_that_need_no_more_tiles(case: tuple[int, int, int]) -> None:
    length, tile, overlap = case
    found, fitted = spans(length, tile, overlap), spans(length, tile, overlap, fit=True)
    side = fitted[0][1] - fitted[0][0]
    assert len(fitted) == len(found) and side <= min(tile, length)
    assert fitted[0][0] == 0 and fitted[-1][1] == length
    for (start, end), (next_start, next_end) in zip(fitted, fitted[1:], strict=False):
        assert next_end - next_start == side and start < next_start and end - next_start >= overlap
    # One unit shorter would need more tiles, or could not overlap as asked.
    assert len(fitted) == 1 or side - 1 <= overlap or len(spans(length, side - 1, overlap)) > len(found)


@given(tilings(), st.integers(0, 64))
@settings(max_examples=300, deadline=None)
def test_every_unit_is_weighed_and_tiles_fade_only_inside(case: tuple[int, int, int], feather: int) -> None:
    length, tile, overlap = case
    total = [0.0] * length
    for start, end in spans(length, tile, overlap):
        weights = ramp(start, end, length, feather)
        assert all(0 < w <= 1 for w in weights)
        for i, w in enumerate(weights):
            # Only the units near an edge inside the picture fade.
            far_from_start = start == 0 or i >= feather
            far_from_end = end == length or end - start - 1 - i >= feather
            assert w == 1.0 or not (far_from_start and far_from_end)
            total[start + i] += w
    assert min(total) > 0
