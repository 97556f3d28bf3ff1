"""The crop rule and edge defaults in shared/crop.py: what the plugin reads and the server agrees on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.crop import MIN_CONTEXT, Edge, Rect, context_rect, edge_defaults

CROPS = [
    # selection, canvas, expected context
    (Rect(100, 100, 50, 50), Rect(0, 0, 1000, 1000), Rect(0, 0, 384, 384)),  # widened, shifted inside
    (Rect(400, 400, 400, 200), Rect(0, 0, 2000, 2000), Rect(250, 250, 700, 500)),  # half the mean side around
    (Rect(0, 0, 10, 10), Rect(0, 0, 100, 100), Rect(0, 0, 100, 100)),  # clipped to a small canvas
    (Rect(1000, 2000, 1, 1), Rect(0, 0, 4000, 4000), Rect(809, 1809, 384, 384)),  # one pixel, centred
    (Rect(1000, 2000, 37, 301), Rect(0, 0, 8192, 8192), Rect(827, 1916, 384, 469)),  # odd sizes
    (Rect(8000, 10, 192, 300), Rect(0, 0, 8192, 8192), Rect(7754, 0, 438, 546)),  # right and top borders
    (Rect(-500, -300, 50, 50), Rect(-600, -400, 1000, 1000), Rect(-600, -400, 384, 384)),  # canvas not at 0, 0
    (Rect(0, 0, 3000, 3000), Rect(0, 0, 3000, 3000), Rect(0, 0, 3000, 3000)),  # everything selected
]


@pytest.mark.parametrize(("selection", "canvas", "expected"), CROPS)
def test_context_rect(selection, canvas, expected):
    context = context_rect(selection, canvas)
    assert context == expected
    assert canvas.contains(context) and context.contains(selection)


EDGES = [
    # selection size, expected (grow, feather)
    ((1, 1), (2, 4)),
    ((100, 100), (3, 7)),
    ((256, 256), (7, 18)),
    ((37, 301), (6, 15)),
    ((1000, 1000), (28, 71)),
    ((10000, 10000), (64, 128)),
]


@pytest.mark.parametrize(("size", "expected"), EDGES)
def test_edge_defaults(size, expected):
    assert edge_defaults(Rect(5, 5, *size)) == Edge(*expected)


def test_replace_background_reads_the_whole_canvas():
    canvas = Rect(0, 0, 900, 700)
    assert context_rect(Rect(10, 10, 20, 20), canvas, fill="replace_background") == canvas


def test_an_empty_selection_has_no_context():
    with pytest.raises(ValueError, match="empty"):
        context_rect(Rect(10, 10, 0, 5), Rect(0, 0, 100, 100))


def test_explicit_edge_widens_the_context_to_its_reach():
    selection = Rect(2000, 2000, 100, 100)
    context = context_rect(selection, Rect(0, 0, 10000, 10000), Edge(300, 200))
    assert context.contains(selection.grown(500))


rects = st.builds(
    lambda x, y, w, h: Rect(x, y, w, h),
    st.integers(-5000, 5000), st.integers(-5000, 5000), st.integers(1, 3000), st.integers(1, 3000),
)


@st.composite
def selection_in_canvas(draw):
    canvas = draw(rects)
    x = draw(st.integers(canvas.x, canvas.right - 1))
    y = draw(st.integers(canvas.y, canvas.bottom - 1))
    width = draw(st.integers(1, canvas.right - x))
    height = draw(st.integers(1, canvas.bottom - y))
    return Rect(x, y, width, height), canvas


@given(selection_in_canvas())
@settings(max_examples=300, deadline=None)
def test_crop_rule_properties(case):
    selection, canvas = case
    edge = edge_defaults(selection)
    context = context_rect(selection, canvas)
    assert canvas.contains(context) and context.contains(selection)
    # The faded border always has real pixels under it, wherever the canvas has them.
    assert context.contains(selection.grown(edge.reach).intersect(canvas))
    assert context.width >= min(MIN_CONTEXT, canvas.width) and context.height >= min(MIN_CONTEXT, canvas.height)
    # The server re-applies the rule to what the plugin sent and gets the same region.
    assert context_rect(selection, context, edge) == context


@given(selection_in_canvas(), st.integers(0, 4000), st.integers(0, 4000), st.integers(0, 8192))
@settings(max_examples=200, deadline=None)
def test_context_does_not_depend_on_the_canvas_size(case, left, top, more):
    selection, _ = case
    unclamped = context_rect(selection, Rect(-10**6, -10**6, 2 * 10**6, 2 * 10**6))
    bigger = Rect(unclamped.x - left, unclamped.y - top, unclamped.width + left + more,
                  unclamped.height + top + more)
    assert context_rect(selection, unclamped) == context_rect(selection, bigger) == unclamped
