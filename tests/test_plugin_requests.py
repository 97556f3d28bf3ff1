"""From canvas and docker settings to a `generate` request: modes, the crop rule, what is read."""

from __future__ import annotations

from typing import get_args

import pytest
from plugin_support import FakeDocument, box_mask, gradient
from underpaint_krita.errors import UserError
from underpaint_krita.requests import FILL_MODES, Settings, build_request, fill_mode

from shared import codec
from shared.crop import Rect, context_rect, edge_defaults
from shared.images import crop
from shared.messages import FillMode

SETTINGS = Settings(model="tiny-sd15", prompt="a fox", negative_prompt="blur", steps=5, cfg_scale=4.5,
                    scheduler="euler", seed=7, batch_size=2)


def _decoded(request):
    """What the server will see: the request through the real codec and its checks."""
    return codec.decode_client(codec.encode(request))


def test_no_selection_full_strength_generates_at_canvas_size() -> None:
    document = FakeDocument(1920, 1080)
    request = _decoded(build_request(document, SETTINGS, "job1"))
    assert (request.mode, request.width, request.height, request.fit_native) == ("txt2img", 1920, 1080, True)
    assert request.image is None and request.mask is None
    assert (request.id, request.model, request.prompt, request.negative_prompt) == ("job1", "tiny-sd15", "a fox",
                                                                                   "blur")
    assert (request.steps, request.cfg_scale, request.scheduler, request.seed, request.batch_size) == (
        5, 4.5, "euler", 7, 2)
    assert request.preview is True and request.autoencoder == "auto"
    assert document.reads == []  # generating from nothing reads no pixels


def test_no_selection_below_full_strength_refines_the_visible_canvas() -> None:
    document = FakeDocument(300, 200, pixels=gradient(300, 200))
    settings = Settings(model="tiny-sd15", strength=0.35)
    request = _decoded(build_request(document, settings, "j"))
    assert (request.mode, request.strength, request.fit_native) == ("img2img", 0.35, True)
    assert request.image.bounds == (0, 0, 300, 200)
    assert request.image.data == document.pixels
    assert request.seed is None  # random: the server picks and reports it


@pytest.mark.parametrize(
    "canvas, box",
    [
        ((1024, 768), Rect(400, 300, 100, 80)),  # in the middle
        ((1024, 768), Rect(0, 0, 50, 40)),  # in a corner: the context is shifted inside the canvas
        ((200, 150), Rect(20, 30, 150, 100)),  # the context is larger than the canvas: clipped
        ((2000, 1500), Rect(100, 200, 900, 700)),  # a large selection
    ],
)
def test_selection_inpaints_exactly_the_crop_rule_region(canvas: tuple[int, int], box: Rect) -> None:
    width, height = canvas
    document = FakeDocument(width, height, pixels=gradient(width, height), selection=box_mask(width, height, box))
    settings = Settings(model="tiny-sd15-inpaint", prompt="a fox", strength=1.0)
    request = _decoded(build_request(document, settings, "j"))

    edge = edge_defaults(box)
    region = context_rect(box, Rect(0, 0, width, height), edge)
    assert request.mode == "inpaint" and request.strength == 1.0
    assert (request.grow, request.feather) == (edge.grow, edge.feather)
    assert request.image.bounds == request.mask.bounds == (region.x, region.y, region.width, region.height)
    assert document.reads == [region]  # only the context region is read, never the whole canvas
    assert request.image.data == crop(document.pixels, width, region.x, region.y, region.width, region.height)
    assert request.mask.format == "a8"
    assert request.mask.data == crop(document.selection, width, region.x, region.y, region.width, region.height, 1)
    assert request.width is None and request.height is None


def test_soft_selection_edges_are_sent_as_they_are() -> None:
    document = FakeDocument(64, 64, selection=box_mask(64, 64, Rect(10, 10, 20, 20), value=128))
    request = build_request(document, Settings(model="m"), "j")
    assert set(request.mask.data) == {0, 128}


def test_selection_below_full_strength_refines_inside_the_selection() -> None:
    document = FakeDocument(256, 256, selection=box_mask(256, 256, Rect(10, 10, 30, 30)))
    request = build_request(document, Settings(model="m", strength=0.4), "j")
    assert (request.mode, request.strength) == ("inpaint", 0.4)


def test_the_fill_picker_offers_every_fill_mode_with_auto_first() -> None:
    assert set(FILL_MODES) == set(get_args(FillMode))
    assert next(iter(FILL_MODES)) == "auto" and Settings().fill == "auto"
    labels = [label for label, _ in FILL_MODES.values()]
    assert len(set(labels)) == len(labels) and all(tooltip for _, tooltip in FILL_MODES.values())


@pytest.mark.parametrize("fill", get_args(FillMode))
def test_the_chosen_fill_mode_goes_with_an_inpaint(fill: FillMode) -> None:
    box = Rect(200, 150, 60, 40)
    document = FakeDocument(1024, 768, pixels=gradient(1024, 768), selection=box_mask(1024, 768, box))
    request = _decoded(build_request(document, Settings(model="m", fill=fill), "j"))
    assert (request.mode, request.fill) == ("inpaint", fill)
    # Replacing the background repaints all but the selection, so it reads the whole canvas.
    region = Rect(0, 0, 1024, 768) if fill == "replace_background" else context_rect(box, Rect(0, 0, 1024, 768))
    assert request.image.bounds == request.mask.bounds == (region.x, region.y, region.width, region.height)
    assert document.reads == [region]


def test_a_fill_mode_is_not_sent_without_a_selection() -> None:
    request = build_request(FakeDocument(64, 64), Settings(model="m", fill="remove"), "j")
    assert (request.mode, request.fill) == ("txt2img", "auto")


@pytest.mark.parametrize("stored", [None, "", "Remove", "inpaint", "outpaint"])
def test_an_unknown_stored_fill_mode_falls_back_to_auto(stored: str | None) -> None:
    assert fill_mode(stored) == "auto"


def test_a_known_stored_fill_mode_is_kept() -> None:
    assert [fill_mode(mode) for mode in get_args(FillMode)] == list(get_args(FillMode))


class _OutsideSelection(FakeDocument):
    def selection_bounds(self) -> Rect:
        return Rect(500, 500, 10, 10)


class _OverhangingSelection(FakeDocument):
    def selection_bounds(self) -> Rect:
        return Rect(-20, -10, 60, 50)  # Krita allows selections beyond the canvas edge


def test_a_selection_over_the_canvas_edge_is_clipped_to_the_canvas() -> None:
    document = _OverhangingSelection(512, 512, selection=box_mask(512, 512, Rect(0, 0, 40, 40)))
    request = build_request(document, Settings(model="m"), "j")
    inside = Rect(0, 0, 40, 40)
    region = context_rect(inside, Rect(0, 0, 512, 512), edge_defaults(inside))
    assert request.image.bounds == (region.x, region.y, region.width, region.height)
    assert (request.grow, request.feather) == (edge_defaults(inside).grow, edge_defaults(inside).feather)


def test_a_selection_outside_the_canvas_is_refused_in_words() -> None:
    with pytest.raises(UserError, match="outside the canvas"):
        build_request(_OutsideSelection(100, 100), Settings(model="m"), "j")


def test_no_model_is_refused_in_words() -> None:
    with pytest.raises(UserError, match="Pick a model first"):
        build_request(FakeDocument(64, 64), Settings(), "j")
