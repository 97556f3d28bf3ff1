"""Styles without Krita: the prompt template, the files in their folder (made with the shipped ones,
saved, renamed, deleted, read safely), and a style changing the request the controller sends."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest
from plugin_support import FakeDocument, connected_controller
from underpaint_krita.errors import UserError
from underpaint_krita.preferences import MemoryPreferences
from underpaint_krita.requests import Settings
from underpaint_krita.styles import (
    FILE_BYTES,
    SHIPPED,
    Style,
    StyleLibrary,
    StyleLora,
    fill_template,
    style_from_settings,
)


@pytest.mark.parametrize(("template", "prompt", "expected"), [
    ("{prompt}, oil painting", "a fox", "a fox, oil painting"),
    ("oil painting of {prompt}, impasto", "a fox", "oil painting of a fox, impasto"),
    ("{prompt}, oil painting", "", "oil painting"),
    ("{prompt}, oil painting", "  a fox,  ", "a fox, oil painting"),
    ("oil painting", "a fox", "a fox, oil painting"),  # no placeholder: the prompt goes first
    ("{prompt}", "(red:1.2) fox", "(red:1.2) fox"),
    ("", "a fox", "a fox"),
])
def test_the_prompt_goes_into_the_template(template: str, prompt: str, expected: str) -> None:
    assert fill_template(template, prompt) == expected


def test_a_style_shapes_the_request_settings() -> None:
    style = Style("Oil", "{prompt}, oil painting", "photo", loras=[StyleLora("impasto", 0.6), StyleLora("bad:name")])
    settings = Settings(model="m", prompt="a fox", negative_prompt="blurry", steps=9)
    styled = style.apply(settings)
    assert styled.prompt == "a fox, oil painting <lora:impasto:0.6>"  # a name that would break the tag is left out
    assert styled.negative_prompt == "blurry, photo"
    assert (styled.model, styled.steps) == ("m", 9) and settings.prompt == "a fox"  # the artist's own stay


def test_a_new_folder_gets_the_shipped_styles_and_they_can_be_edited_and_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "krita" / "underpaint" / "styles"
    library = StyleLibrary(folder)
    assert library.names() == sorted((s.name for s in SHIPPED), key=str.lower)
    assert sorted(p.name for p in folder.iterdir()) == ["concept-art.json", "ink-drawing.json", "oil-painting.json",
                                                        "watercolour.json"]
    edited = Style("Oils, thick", "{prompt}, impasto", steps=30, cfg_scale=5.5, sampler="euler_a",
                   loras=[StyleLora("knife", 0.7)])
    library.save(edited, replacing="Oil painting")  # renamed: the same file holds it
    library.delete("Ink drawing")
    again = StyleLibrary(folder)  # as after a restart; deleted shipped styles stay deleted
    assert again.names() == ["Concept art", "Oils, thick", "Watercolour"]
    assert again.get("Oils, thick") == edited
    assert json.loads((folder / "oil-painting.json").read_text())["loras"] == [{"name": "knife", "strength": 0.7}]


def test_file_names_come_from_letters_and_digits_only(tmp_path: Path) -> None:
    library = StyleLibrary(tmp_path)
    for name in ("../../evil", "Ölbild", "Oil painting!", "oil  painting", "***"):
        library.save(Style(name))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["evil.json", "lbild.json", "oil-painting-2.json", "oil-painting.json", "style.json"], names
    assert StyleLibrary(tmp_path).get("../../evil") == Style("../../evil")


def test_bad_files_cost_only_what_they_got_wrong(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "ok.json").write_text(json.dumps({"name": "Good", "prompt": "{prompt}, good", "steps": 999,
                                                  "cfg_scale": "high", "loras": "none", "future": True}))
    (tmp_path / "noname.json").write_text(json.dumps({"prompt": "x"}))
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "huge.json").write_text(json.dumps({"name": "Huge", "prompt": "x" * FILE_BYTES}))
    (tmp_path / "twin.json").write_text(json.dumps({"name": "Good"}))
    (tmp_path / "folder.json").mkdir()
    os.mkfifo(tmp_path / "fifo.json")
    found: list[StyleLibrary] = []
    with caplog.at_level(logging.WARNING, logger="underpaint_krita.styles"):
        reader = threading.Thread(target=lambda: found.append(StyleLibrary(tmp_path)))
        reader.start()
        reader.join(10)
    assert not reader.is_alive(), "a FIFO named *.json blocked reading the styles"
    (library,) = found
    assert library.names() == ["Good"]
    assert library.get("Good") == Style("Good", "{prompt}, good")
    for said in ("ignored steps", "ignored cfg_scale", "ignored loras", "noname.json: missing field 'name'",
                 "list.json: message must be a map", "binary.json is not JSON", "huge.json: larger than 64 KiB",
                 "twin.json is hidden by ok.json"):
        assert said in caplog.text, said


def test_without_a_folder_the_shipped_styles_are_there_but_nothing_is_saved() -> None:
    library = StyleLibrary(None)
    assert library.get("Oil painting") == SHIPPED[0]
    with pytest.raises(UserError, match="cannot be saved"):
        library.save(Style("Mine"))


def test_a_new_style_from_the_current_settings() -> None:
    settings = Settings(model="painterly", scheduler="euler_a", steps=12, cfg_scale=4.0, prompt="a fox")
    base = Style("Oil painting", "{prompt}, oil", "photo", loras=[StyleLora("knife")])
    new = style_from_settings("Mine", settings, base)
    assert new == Style("Mine", "{prompt}, oil", "photo", "painterly", "euler_a", 12, 4.0, [StyleLora("knife")])
    assert style_from_settings("Plain", settings, None).prompt == "{prompt}"


def test_choosing_a_style_changes_the_request_and_outlives_a_restart(tmp_path: Path) -> None:
    preferences = MemoryPreferences()  # as Krita's settings: kept for the "restart" below
    controller, connection, workspace, _ = connected_controller(FakeDocument(64, 48), "a fox", preferences=preferences,
                                                                styles=StyleLibrary(tmp_path))
    controller.save_style(Style("Inky", "{prompt}, ink", "colour", model="tiny-sd15-inpaint", sampler="euler",
                                steps=7, cfg_scale=3.5, loras=[StyleLora("tiny-sd15-lora", 0.5)]))
    assert controller.choices.style.name == "Inky" and controller.message == ""
    controller.settings.negative_prompt = "blurry"
    controller.generate()
    request = connection.sent[-1]
    assert (request.prompt, request.negative_prompt) == ("a fox, ink <lora:tiny-sd15-lora:0.5>", "blurry, colour")
    assert (request.model, request.scheduler, request.steps, request.cfg_scale) == ("tiny-sd15-inpaint", "euler", 7,
                                                                                    3.5)
    assert controller.settings.prompt == "a fox"  # the prompt box keeps the artist's words
    assert preferences.read("style") == "Inky"

    restarted = type(controller)(connection, workspace, preferences=preferences, styles=StyleLibrary(tmp_path))
    assert restarted.choices.style.name == "Inky" and restarted.settings.steps == 7
    controller.choose_style("")
    controller.generate()
    assert connection.sent[-1].prompt == "a fox" and preferences.read("style") is None


def test_a_style_with_what_the_server_lacks_says_so_and_uses_the_rest(tmp_path: Path) -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(64, 48), "a fox", styles=StyleLibrary(tmp_path))
    controller.save_style(Style("Elsewhere", "{prompt}, far", model="not-here", sampler="warp", steps=5))
    assert controller.message == ("The style “Elsewhere” uses its model not-here and its sampler warp, which this "
                                  "server does not have.")
    assert (controller.settings.model, controller.settings.scheduler, controller.settings.steps) == (
        "tiny-sd15", "dpmpp_2m", 5)


def test_deleting_the_current_style_leaves_none(tmp_path: Path) -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(64, 48), "a fox",
                                                        styles=StyleLibrary(tmp_path / "styles"))
    controller.choose_style("Watercolour")
    assert controller.choices.style.name == "Watercolour"
    controller.delete_style("Watercolour")
    assert controller.choices.style is None and "Watercolour" not in controller.choices.library.names()
    controller.generate()
    assert connection.sent[-1].prompt == "a fox"
