"""Where each setting comes from, without Krita: what the artist changed stays, the rest follows the
model's recommendations (ModelInfo.defaults); the recent prompts; the LoRAs and embeddings that fit."""

from __future__ import annotations

from dataclasses import replace

import pytest
from plugin_support import WELCOME, FakeDocument, connected_controller
from underpaint_krita.connection import Connected
from underpaint_krita.networks import fitting, label, snippet, spaced
from underpaint_krita.preferences import MemoryPreferences
from underpaint_krita.recent_prompts import LIMIT, RecentPrompts

from shared.messages import ModelDefaults, ModelInfo

PAINTERLY = ModelInfo(name="painterly", kind="checkpoint", family="sd15", variant="regular",
                      defaults=ModelDefaults(cfg_scale=4.5, steps=28, scheduler="euler_a", width=768, height=768))
TURBO = ModelInfo(name="turbo", kind="checkpoint", family="sdxl", variant="regular",
                  defaults=ModelDefaults(cfg_scale=1.0, steps=4, scheduler="euler"))
SILENT = ModelInfo(name="silent", kind="checkpoint", family="sd15", variant="regular")  # an older server's entry
RECOMMENDING = replace(WELCOME, models=[PAINTERLY, TURBO, SILENT, *WELCOME.models],
                       schedulers=["euler", "euler_a", "dpmpp_2m"])


@pytest.fixture
def controller():
    controller, connection, _, _ = connected_controller(FakeDocument(64, 48), "a fox")
    connection.reply(Connected(RECOMMENDING))
    controller.poll()
    return controller


def _tuned(controller) -> tuple:
    settings = controller.settings
    return settings.model, settings.steps, settings.cfg_scale, settings.scheduler


def _edit(controller, **changes) -> None:
    """What the docker does when the artist changes controls."""
    controller.edit_settings(replace(controller.settings, **changes))


def test_a_model_brings_its_recommendations_until_the_artist_changes_one(controller) -> None:
    assert _tuned(controller) == ("tiny-sd15", 20, 7.0, "dpmpp_2m")  # kept from the first welcome
    _edit(controller, model="painterly")
    assert _tuned(controller) == ("painterly", 28, 4.5, "euler_a")
    _edit(controller, steps=12)  # the artist's own choice
    _edit(controller, model="turbo")
    assert _tuned(controller) == ("turbo", 12, 1.0, "euler")  # the steps stay, the rest follows
    _edit(controller, model="silent")  # recommends nothing: the built-in values
    assert _tuned(controller) == ("silent", 12, 7.0, "dpmpp_2m")
    controller.forget_changes()
    _edit(controller, model="turbo")
    assert _tuned(controller) == ("turbo", 4, 1.0, "euler")
    controller.generate()
    request = controller.connection.sent[-1]
    assert (request.steps, request.cfg_scale, request.scheduler) == (4, 1.0, "euler")


def test_a_prompt_change_is_no_choice_of_steps(controller) -> None:
    _edit(controller, prompt="a red fox", strength=0.5, seed=3)
    _edit(controller, model="painterly")
    assert _tuned(controller) == ("painterly", 28, 4.5, "euler_a")


def test_a_style_sets_what_it_names_and_the_model_recommends_the_rest(controller, tmp_path) -> None:
    from underpaint_krita.styles import Style, StyleLibrary

    controller.choices.library = StyleLibrary(tmp_path)
    controller.save_style(Style("Slow", steps=40))
    _edit(controller, model="painterly")
    assert _tuned(controller) == ("painterly", 40, 4.5, "euler_a")
    _edit(controller, cfg_scale=6.0)
    controller.forget_changes()  # back to the style and the model
    assert _tuned(controller) == ("painterly", 40, 4.5, "euler_a")
    controller.choose_style("")  # a fresh start without a style
    assert _tuned(controller) == ("painterly", 28, 4.5, "euler_a")


def test_the_models_recommendation_is_taken_when_the_server_connects() -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(64, 48), "", preferences=MemoryPreferences())
    connection.reply(Connected(replace(WELCOME, models=[PAINTERLY])))
    controller.poll()
    assert _tuned(controller) == ("painterly", 28, 4.5, "euler_a")  # the old model is gone: the first one


def test_recent_prompts_newest_first_once_each_and_outliving_a_restart(controller) -> None:
    for prompt in ("a fox", "a cat", "  a fox ", ""):
        _edit(controller, prompt=prompt)
        controller.generate()
    recent = controller.choices.recent
    assert recent.prompts == ["a fox", "a cat"]
    assert RecentPrompts(controller.preferences).prompts == ["a fox", "a cat"]
    # Stepping through them from the prompt box: older, older, then the end; back to newer.
    assert [recent.step("something new", 1), recent.step("a fox", 1), recent.step("a cat", 1)] == [
        "a fox", "a cat", None]
    assert recent.step("a cat", -1) == "a fox" and recent.step("a fox", -1) is None


def test_recent_prompts_are_capped_and_survive_a_broken_store() -> None:
    preferences = MemoryPreferences({"recent_prompts": "{not json"})
    recent = RecentPrompts(preferences)
    assert recent.prompts == []
    for n in range(LIMIT + 5):
        recent.add(f"prompt {n}")
    recent.add("x" * 5000)  # too long to keep in Krita's settings
    assert len(recent.prompts) == LIMIT and recent.prompts[0] == f"prompt {LIMIT + 4}"
    preferences.write("recent_prompts", '["ok", 3, "", null]')
    assert RecentPrompts(preferences).prompts == ["ok"]


NETWORKS = [
    ModelInfo(name="knife", kind="lora", family="sd15", trigger_words=["impasto", "palette knife"]),
    ModelInfo(name="xl-detail", kind="lora", family="sdxl"),
    ModelInfo(name="mystery", kind="lora", family=None),
    ModelInfo(name="old", kind="lora", refused="pickle files (.ckpt, .pt, .bin, .pth) can run code"),
    ModelInfo(name="easynegative", kind="embedding", family="sd15"),
    ModelInfo(name="xl-neg", kind="embedding", family="sdxl"),
    ModelInfo(name="painterly", kind="checkpoint", family="sd15"),
    ModelInfo(name="scribble", kind="controlnet", family="sd15"),  # a kind this plugin does not know
]


def test_the_picker_offers_what_fits_the_models_family() -> None:
    assert [m.name for m in fitting(NETWORKS, "sd15")] == ["knife", "mystery", "old", "easynegative"]
    assert [m.name for m in fitting(NETWORKS, "sdxl")] == ["xl-detail", "mystery", "old", "xl-neg"]
    assert [label(m) for m in fitting(NETWORKS, "sd15")[:2]] == ["knife · SD1.5 · impasto, palette knife",
                                                                  "mystery · family unknown"]


def test_the_picker_offers_what_fits_the_chosen_model(controller) -> None:
    controller.server.welcome = replace(RECOMMENDING, models=[*RECOMMENDING.models, *NETWORKS])
    _edit(controller, model="turbo")
    assert [m.name for m in controller.networks()] == ["xl-detail", "mystery", "old", "tiny-sd15-lora", "xl-neg"]


@pytest.mark.parametrize(("before", "after", "expected"), [
    ("a fox", "", "a fox <lora:knife:0.8>"),
    ("", "a fox", "<lora:knife:0.8> a fox"),
    ("a fox ", "", "a fox <lora:knife:0.8>"),
    ("", "", "<lora:knife:0.8>"),
    ("a fox,", " oil", "a fox, <lora:knife:0.8> oil"),
    ("a fox,", "oil", "a fox, <lora:knife:0.8> oil"),
])
def test_adding_to_the_prompt_keeps_words_apart(before: str, after: str, expected: str) -> None:
    assert before + spaced(before, after, snippet(NETWORKS[0])) + after == expected
    assert snippet(NETWORKS[4]) == "easynegative"
