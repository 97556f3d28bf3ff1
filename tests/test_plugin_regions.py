"""Regional prompts in the plugin: stored per document, masks from layer alpha cropped like the image,
carried in generate and live requests."""

from __future__ import annotations

import pytest
from plugin_support import Clock, FakeDocument, ScriptedConnection, box_mask, connected_controller, gradient
from underpaint_krita.controller import Controller
from underpaint_krita.errors import UserError
from underpaint_krita.regions import RegionPrompt, Regions
from underpaint_krita.requests import Settings, build_request

from shared import codec
from shared.crop import Rect, context_rect, edge_defaults
from shared.images import crop
from shared.messages import MAX_REGIONS, Generate, Live

W, H = 1200, 900
SKY = Rect(0, 0, 1200, 150)
FOX = Rect(800, 600, 150, 120)


def _soft_alpha(width: int, height: int, box: Rect) -> bytes:
    """Coverage rising left to right inside `box`: a soft-edged region."""
    rows = []
    for y in range(height):
        row = bytearray(width)
        if box.y <= y < box.bottom:
            row[box.x:box.right] = bytes(1 + (i * 254) // max(box.width - 1, 1) for i in range(box.width))
        rows.append(bytes(row))
    return b"".join(rows)


def _document(**kwargs) -> FakeDocument:
    document = FakeDocument(W, H, pixels=gradient(W, H), **kwargs)
    document.alphas = {"sky-id": ("Sky", box_mask(W, H, SKY)), "fox-id": ("Fox group", _soft_alpha(W, H, FOX))}
    return document


REGIONS = (RegionPrompt("sky-id", "a stormy sky", "sun"), RegionPrompt("fox-id", "a red fox"))


def _decoded(request):
    return codec.decode_client(codec.encode(request))


def test_without_selection_every_region_spans_the_canvas() -> None:
    document = _document()
    request = _decoded(build_request(document, Settings(model="m", strength=0.5), "j", regions=REGIONS))
    sky, fox = request.regions
    assert (sky.prompt, sky.negative_prompt, fox.prompt, fox.negative_prompt) == ("a stormy sky", "sun",
                                                                                 "a red fox", "")
    assert sky.mask.bounds == fox.mask.bounds == request.image.bounds == (0, 0, W, H)
    assert sky.mask.format == "a8" and sky.mask.data == document.alphas["sky-id"][1]
    assert fox.mask.data == document.alphas["fox-id"][1] and len(set(fox.mask.data)) > 3  # soft coverage kept


def test_txt2img_carries_regions_too() -> None:
    request = _decoded(build_request(_document(), Settings(model="m"), "j", regions=REGIONS))
    assert request.mode == "txt2img" and [r.prompt for r in request.regions] == ["a stormy sky", "a red fox"]


@pytest.mark.parametrize("box, prompts", [
    (Rect(850, 650, 40, 30), ["a red fox"]),  # only the fox reaches into the context region: the sky is left out
    (Rect(600, 100, 250, 550), ["a stormy sky", "a red fox"]),
])
def test_with_a_selection_masks_are_cropped_like_the_image(box: Rect, prompts: list[str]) -> None:
    document = _document(selection=box_mask(W, H, box))
    request = _decoded(build_request(document, Settings(model="m"), "j", regions=REGIONS))
    rect = context_rect(box, Rect(0, 0, W, H), edge_defaults(box))
    assert request.mode == "inpaint" and request.image.bounds == (rect.x, rect.y, rect.width, rect.height)
    assert [r.prompt for r in request.regions] == prompts
    by_prompt = {"a stormy sky": "sky-id", "a red fox": "fox-id"}
    for region in request.regions:
        assert region.mask.bounds == request.image.bounds
        full = document.alphas[by_prompt[region.prompt]][1]
        assert region.mask.data == crop(full, W, rect.x, rect.y, rect.width, rect.height, channels=1)


def test_a_deleted_layer_or_an_empty_one_is_left_out() -> None:
    document = _document()
    document.alphas["sky-id"] = ("Sky", bytes(W * H))  # erased
    del document.alphas["fox-id"]
    request = build_request(document, Settings(model="m"), "j", regions=REGIONS)
    assert request.regions == []


def test_stored_regions_round_trip_and_bad_blobs_name_the_problem() -> None:
    regions = Regions(list(REGIONS))
    regions.set(RegionPrompt("sky-id", "a calm sky"))  # a new prompt keeps its place
    again = Regions.from_json(regions.to_json())
    assert list(again) == [RegionPrompt("sky-id", "a calm sky"), REGIONS[1]]
    for blob, words in [(b"\xff", "not JSON"), (b'{"version": 9}', "version"),
                        (b'{"version": 1, "regions": [{"layer_id": "a"}]}', r"regions\[0\]"),
                        (b'{"version": 1, "regions": [{"layer_id": 1, "prompt": "x"}]}', "must be text")]:
        with pytest.raises(ValueError, match=words):
            Regions.from_json(blob)


def test_at_most_the_servers_number_of_regions() -> None:
    regions = Regions([RegionPrompt(str(i), "p") for i in range(MAX_REGIONS)])
    with pytest.raises(UserError, match="at most 16"):
        regions.set(RegionPrompt("one-more", "p"))
    few = Regions([RegionPrompt("a", "p"), RegionPrompt("b", "p")])
    with pytest.raises(UserError, match="at most 2"):
        few.set(RegionPrompt("c", "p"), limit=2)
    few.set(RegionPrompt("a", "another prompt"), limit=2)  # a layer that is a region already: no new one


@pytest.fixture
def controller_setup():
    return connected_controller(_document(), "a meadow")


def test_the_active_layer_becomes_a_region_stored_in_the_document(controller_setup) -> None:
    controller, connection, workspace, document = controller_setup
    assert controller.add_region("a stormy sky") is None and "Select the layer" in controller.message
    document.active_layer = "sky-id"
    assert controller.add_region("a stormy sky", "sun") == "sky-id"
    document.active_layer = "fox-id"
    controller.add_region("a red fox")
    assert [(r.prompt, name) for r, name in controller.regions()] == [("a stormy sky", "Sky"),
                                                                      ("a red fox", "Fox group")]
    controller.generate()
    (request,) = [m for m in connection.sent if isinstance(m, Generate)]
    assert [r.prompt for r in request.regions] == ["a stormy sky", "a red fox"]

    # Saved and reopened: a new controller finds the regions in the document.
    reopened = Controller(ScriptedConnection(), workspace)
    assert [r.layer_id for r, _ in reopened.regions()] == ["sky-id", "fox-id"]

    controller.remove_region("sky-id")
    del document.alphas["fox-id"]  # the artist deleted the fox group
    assert controller.regions() == []
    assert list(Regions.from_json(document.lists["regions"])) == []


def test_an_unreadable_stored_region_list_starts_empty(controller_setup) -> None:
    _, _, workspace, document = controller_setup
    document.lists["regions"] = b"not json"
    assert Controller(ScriptedConnection(), workspace).regions() == []


def test_live_frames_carry_regions_and_a_new_region_prompt_sends_a_frame(controller_setup) -> None:
    controller, connection, _, document = controller_setup
    controller.clock = clock = Clock()
    controller.settings.strength = 0.5
    document.active_layer = "fox-id"
    controller.add_region("a red fox")
    controller.set_live(True)
    controller.poll()
    clock.now += 1.0
    controller.poll()  # nothing changed
    controller.add_region("a grey wolf")
    clock.now += 1.0
    controller.poll()
    frames = [m for m in connection.sent if isinstance(m, Live)]
    assert [[r.prompt for r in f.regions] for f in frames] == [["a red fox"], ["a grey wolf"]]
    assert frames[0].regions[0].mask.data == document.alphas["fox-id"][1]
