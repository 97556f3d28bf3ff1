"""The fill-mode table both sides read: every fill mode of the protocol, what each replaces, where
its context is and what an empty prompt means."""

from __future__ import annotations

from typing import get_args

import pytest

from shared import fills
from shared.crop import Rect, context_rect
from shared.messages import FillMode, Generate


def test_the_table_holds_every_fill_mode_of_the_protocol_with_the_default_first():
    assert list(fills.FILLS) == list(get_args(FillMode))
    assert fills.DEFAULT == next(iter(fills.FILLS)) == Generate(id="x", mode="inpaint", model="m").fill


@pytest.mark.parametrize(("fill", "strength", "replaces"), [
    ("fill", 1.0, True), ("fill", 0.99, False),
    ("replace_background", 1.0, True), ("replace_background", 0.5, False),
    ("remove", 1.0, True), ("remove", 0.3, True),
    ("expand", 1.0, False), ("add", 1.0, False),
])
def test_which_fills_hide_the_selected_content_from_the_start_picture(fill, strength, replaces):
    assert fills.FILLS[fill].replaces_content(strength) is replaces


@pytest.mark.parametrize(("reaches_transparent", "resolved"), [(True, "expand"), (False, "fill")])
def test_auto_expands_into_transparent_canvas_and_fills_elsewhere(reaches_transparent, resolved):
    assert fills.resolve("auto", reaches_transparent).name == resolved
    assert fills.resolve("add", reaches_transparent).name == "add"


@pytest.mark.parametrize(("fill", "prompt", "used"), [
    ("remove", "", "background"), ("remove", "  ", "background"), ("remove", "a lake", "a lake"),
    ("fill", "", ""), ("replace_background", "", ""),
])
def test_the_prompt_a_fill_paints_with(fill, prompt, used):
    assert fills.FILLS[fill].prompt(prompt) == used


@pytest.mark.parametrize("fill", list(fills.FILLS))
def test_only_a_fill_that_repaints_around_the_selection_reads_the_whole_canvas(fill):
    canvas = Rect(0, 0, 4000, 3000)
    whole = context_rect(Rect(100, 100, 50, 50), canvas, fill=fill) == canvas
    assert whole is fills.FILLS[fill].whole_canvas is fills.FILLS[fill].inverted is (fill == "replace_background")
