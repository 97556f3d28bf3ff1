"""Layer names: prompt first, cut at a word, seed last."""

from __future__ import annotations

import pytest
from plugin_support import PLUGIN_SOURCE  # noqa: F401  (puts the plugin on sys.path)
from underpaint_krita import naming


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a red fox", "a red fox"),
        ("  a red\n fox\t ", "a red fox"),
        ("", "(no prompt)"),
        ("   ", "(no prompt)"),
        ("x" * 40, "x" * 40),
        ("x" * 41, "x" * 40 + "…"),
        ("a castle on a hill at dawn, volumetric light, oil painting", "a castle on a hill at dawn, volumetric…"),
        ("word " * 3 + "y" * 60, "word word word " + "y" * 25 + "…"),
        ("a fox, oil painting <lora:impasto:0.6> <LORA:knife:1>", "a fox, oil painting"),
        ("<lora:impasto:0.6>", "(no prompt)"),
    ],
)
def test_short_prompt(prompt: str, expected: str) -> None:
    assert naming.short_prompt(prompt) == expected


@pytest.mark.parametrize(
    "make, args, expected",
    [
        (naming.preview_name, ("a red fox",), "[Preview] a red fox"),
        (naming.generated_name, ("a red fox", 42), "[Generated] a red fox (42)"),
        (naming.generated_name, ("", 7), "[Generated] (no prompt) (7)"),
        (naming.live_name, ("sketch", 3), "[Live] sketch (3)"),
        (naming.control_name, ("depth",), "[Control] depth"),
    ],
)
def test_layer_names(make, args, expected: str) -> None:
    assert make(*args) == expected


@pytest.mark.parametrize(
    "name, preview",
    [("[Preview] a fox", True), ("[Preview]", False), ("[Generated] a fox (1)", False), ("Preview", False),
     ("[Control] canny", False)],
)
def test_is_preview(name: str, preview: bool) -> None:
    assert naming.is_preview(name) is preview
