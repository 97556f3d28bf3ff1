"""Reference pictures in the plugin: stored per document, each layer's whole picture read over its own
bounds (never cropped to the selection), shrunk when larger than the server needs, carried in
generate, inpaint, refine, live and refined-upscale requests; pictures from files become hidden layers."""

from __future__ import annotations

import dataclasses
import re

import pytest
from plugin_support import (
    Clock,
    FakeDocument,
    ScriptedConnection,
    box_mask,
    connected_controller,
    gradient,
    shrunk_nearest,
)
from underpaint_krita.controller import Controller
from underpaint_krita.errors import UserError
from underpaint_krita.references import DEFAULT_STRENGTH, MODES, SIDE, ReferenceLayer, References, sent_size
from underpaint_krita.requests import Settings, Upscaling, build_request, build_upscale

from shared import codec
from shared.crop import Rect
from shared.images import crop
from shared.messages import MAX_REFERENCES, REFERENCE_MODES, Generate, Image, Limits, Live, Reference

W, H = 320, 240
PHOTO = Rect(40, 30, 101, 57)  # where the photo layer is painted: odd offsets and sizes
CAT = Rect(200, 150, 90, 70)


def _layer(box: Rect, seed: int) -> bytes:
    """A full-canvas RGBA layer, transparent but for a patterned `box` (every pixel differs)."""
    pixels = bytearray(W * H * 4)
    for y in range(box.y, box.bottom):
        for x in range(box.x, box.right):
            pixels[(y * W + x) * 4:(y * W + x + 1) * 4] = bytes([(x * 7 + seed) % 256, (y * 3) % 256, seed, 255])
    return bytes(pixels)


def _document(**kwargs) -> FakeDocument:
    document = FakeDocument(W, H, pixels=gradient(W, H), **kwargs)
    document.rgbas = {"photo-id": ("Photo", _layer(PHOTO, 11)), "cat-id": ("Cat", _layer(CAT, 99))}
    return document


def _own_picture(document: FakeDocument, layer_id: str, box: Rect) -> bytes:
    return crop(document.rgbas[layer_id][1], W, box.x, box.y, box.width, box.height)


REFERENCES = (ReferenceLayer("photo-id", "style", 0.8, 0.0, 0.6), ReferenceLayer("cat-id", "face", 0.5, 0.2, 1.0))


def _decoded(request):
    """As the server reads it: the codec's validation included."""
    return codec.decode_client(codec.encode(request))


@pytest.mark.parametrize("width, height, side, expected", [
    (224, 224, 1024, (224, 224)),  # small enough: as it is, never enlarged
    (1024, 1024, 1024, (1024, 1024)),
    (1025, 10, 1024, (1024, 10)),
    (4000, 3000, 1024, (1024, 768)),
    (3000, 4000, 1024, (768, 1024)),
    (5000, 1, 1024, (1024, 1)),  # never 0 a side
    (1, 9000, 1024, (1, 1024)),
    (1535, 1023, 1024, (1024, 682)),
    (640, 480, 48, (48, 36)),
])
def test_sent_size_keeps_the_aspect_within_the_side(width: int, height: int, side: int,
                                                    expected: tuple[int, int]) -> None:
    assert sent_size(width, height, side) == expected


@pytest.mark.parametrize("strength, selection", [(1.0, None), (0.5, None), (1.0, Rect(61, 41, 13, 9)),
                                                 (0.4, Rect(250, 10, 30, 20))])
def test_each_reference_is_its_layers_whole_picture_whatever_the_selection(strength: float,
                                                                           selection: Rect | None) -> None:
    """txt2img, img2img, inpaint and an inpaint far from both layers: the same two whole pictures."""
    document = _document(selection=box_mask(W, H, selection) if selection else None)
    request = _decoded(build_request(document, Settings(model="m", strength=strength), "j", references=REFERENCES))
    assert request.mode == ("inpaint" if selection else "txt2img" if strength == 1.0 else "img2img")
    photo, cat = request.reference
    assert [(r.mode, r.strength, r.start, r.end, r.mask) for r in request.reference] == [
        ("style", 0.8, 0.0, 0.6, None), ("face", 0.5, 0.2, 1.0, None)]
    assert (photo.image.width, photo.image.height, photo.image.format) == (PHOTO.width, PHOTO.height, "rgba8")
    assert photo.image.data == _own_picture(document, "photo-id", PHOTO)
    assert (cat.image.width, cat.image.height) == (CAT.width, CAT.height)
    assert cat.image.data == _own_picture(document, "cat-id", CAT)


def test_a_large_layer_is_shrunk_to_the_side_keeping_its_aspect() -> None:
    document = _document()
    big = Image(width=1500, height=1000, format="rgba8", data=gradient(1500, 1000))
    document.pictures["big-id"] = ("[Reference] big.png", big)
    (reference,) = _decoded(build_request(document, Settings(model="m"), "j",
                                          references=[ReferenceLayer("big-id")])).reference
    assert (reference.image.width, reference.image.height) == (SIDE, 683)
    assert reference.image.data == shrunk_nearest(big, SIDE).data
    assert (reference.mode, reference.strength) == ("reference", DEFAULT_STRENGTH)


def test_a_deleted_layer_or_an_empty_one_is_left_out() -> None:
    document = _document()
    document.rgbas["photo-id"] = ("Photo", bytes(W * H * 4))  # erased
    del document.rgbas["cat-id"]
    document.pictures["clear-id"] = ("Clear", Image(width=8, height=8, format="rgba8", data=bytes(8 * 8 * 4)))
    references = [*REFERENCES, ReferenceLayer("clear-id")]
    assert build_request(document, Settings(model="m"), "j", references=references).reference == []


def test_a_refined_upscale_carries_the_references_and_a_plain_one_none() -> None:
    document = _document()
    limits = Limits()
    refined = build_upscale(document, Settings(model="m"), Upscaling(refine=0.3), "j", limits, references=REFERENCES)
    assert [r.image.data for r in _decoded(refined).reference] == [_own_picture(document, "photo-id", PHOTO),
                                                                  _own_picture(document, "cat-id", CAT)]
    plain = build_upscale(document, Settings(model="m"), Upscaling(), "j", limits, references=REFERENCES)
    assert plain.reference == []


def test_stored_references_round_trip_and_new_settings_keep_the_place() -> None:
    references = References(list(REFERENCES))
    references.set(ReferenceLayer("photo-id", "composition", 1.0))
    assert list(References.from_json(references.to_json())) == [ReferenceLayer("photo-id", "composition", 1.0),
                                                                REFERENCES[1]]


@pytest.mark.parametrize("blob, words", [
    (b"\xff", "not JSON"),
    (b'{"version": 2, "references": []}', "version"),
    (b'{"version": 1, "references": ["photo-id"]}', r"references\[0\]"),
    (b'{"version": 1, "references": [{"mode": "style"}]}', r"references\[0\].*layer_id"),
    (b'{"version": 1, "references": [{"layer_id": "a", "kind": "depth"}]}', "kind"),
    (b'{"version": 1, "references": [{"layer_id": 7}]}', "layer_id must be text"),
    (b'{"version": 1, "references": [{"layer_id": "a", "mode": "scribble"}]}', "mode is 'scribble'"),
    (b'{"version": 1, "references": [{"layer_id": "a", "strength": 1.5}]}', "strength is 1.5, not .* 0 to 1"),
    (b'{"version": 1, "references": [{"layer_id": "a", "strength": true}]}', "strength is True"),
    (b'{"version": 1, "references": [{"layer_id": "a", "start": 0.7, "end": 0.3}]}', r"start \(0.7\) must come"),
])
def test_a_bad_stored_list_names_what_is_wrong(blob: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        References.from_json(blob)


def test_at_most_the_protocols_number_of_references() -> None:
    references = References([ReferenceLayer(str(i)) for i in range(MAX_REFERENCES)])
    with pytest.raises(UserError, match=f"at most {MAX_REFERENCES}"):
        references.set(ReferenceLayer("one-more"))
    references.set(ReferenceLayer("0", "style"))  # a layer that is a reference already: no new one
    assert len(references) == MAX_REFERENCES and references.get("0").mode == "style"
    stored = References([ReferenceLayer(str(i)) for i in range(MAX_REFERENCES + 3)]).to_json()
    assert len(References.from_json(stored)) == MAX_REFERENCES


def test_every_mode_of_the_protocol_has_a_label_and_the_defaults_are_the_protocols() -> None:
    assert tuple(MODES) == REFERENCE_MODES
    protocol = {f.name: f.default for f in dataclasses.fields(Reference) if f.name in ("mode", "strength", "start",
                                                                                       "end")}
    assert dataclasses.asdict(ReferenceLayer("x")) == {"layer_id": "x", **protocol}


@pytest.fixture
def controller_setup():
    return connected_controller(_document(), "a cat in a garden")


def test_the_active_layer_becomes_a_reference_stored_in_the_document(controller_setup) -> None:
    controller, connection, workspace, document = controller_setup
    assert controller.add_reference("style") is None and "Select the layer" in controller.message
    document.active_layer = "photo-id"
    assert controller.add_reference("style") == "photo-id"
    controller.set_reference(ReferenceLayer("photo-id", "style", 0.9, 0.0, 0.5))
    document.active_layer = "cat-id"
    controller.add_reference("face")
    document.active_layer = "photo-id"
    controller.add_reference("composition")  # a new mode keeps the strength and range
    assert controller.references() == [(ReferenceLayer("photo-id", "composition", 0.9, 0.0, 0.5), "Photo"),
                                       (ReferenceLayer("cat-id", "face"), "Cat")]
    controller.generate()
    (request,) = [m for m in connection.sent if isinstance(m, Generate)]
    assert [(r.mode, r.strength, r.end) for r in request.reference] == [("composition", 0.9, 0.5),
                                                                        ("face", DEFAULT_STRENGTH, 1.0)]
    assert controller.layer_thumbnail("cat-id", 48).width == 48

    # Saved and reopened: a new controller finds the references in the document.
    reopened = Controller(ScriptedConnection(), workspace)
    assert [r for r, _ in reopened.references()] == [r for r, _ in controller.references()]

    controller.remove_reference("photo-id")
    del document.rgbas["cat-id"]  # the artist deleted the cat layer
    assert controller.references() == []
    assert list(References.from_json(document.lists["references"])) == []
    assert controller.layer_thumbnail("cat-id", 48) is None


def test_a_picture_file_becomes_a_hidden_reference_layer_named_after_it(controller_setup) -> None:
    controller, connection, _, document = controller_setup
    picture = Image(width=64, height=40, format="rgba8", data=gradient(64, 40))
    document.files["/home/artist/Pictures/old oak.jpg"] = picture
    document.active_layer = "photo-id"
    layer_id = controller.add_reference_picture("/home/artist/Pictures/old oak.jpg", "style")
    assert controller.references() == [(ReferenceLayer(layer_id, "style", DEFAULT_STRENGTH), "[Reference] old oak.jpg")]
    assert set(document.rgbas) == {"photo-id", "cat-id"}  # the artist's layers are as they were
    controller.generate()
    (reference,) = connection.sent[-1].reference
    assert (reference.image.width, reference.image.height, reference.image.data) == (64, 40, picture.data)

    assert controller.add_reference_picture("/home/artist/notes.txt", "style") is None
    assert controller.message == "That file is not a picture Krita can read."
    assert len(document.pictures) == 1 and len(controller.references()) == 1


def test_no_layer_is_imported_when_the_list_is_full_or_the_mode_unknown(controller_setup) -> None:
    controller, _, _, document = controller_setup
    document.files["p.png"] = Image(width=4, height=4, format="rgba8", data=gradient(4, 4))
    assert controller.add_reference_picture("p.png", "pose") is None
    assert "Mode is 'pose'" in controller.message and not document.pictures
    for i in range(MAX_REFERENCES):
        controller.session().layers.set_reference(ReferenceLayer(f"layer-{i}"))
    assert controller.add_reference_picture("p.png", "style") is None
    assert "as many reference pictures as the server takes" in controller.message and not document.pictures


@pytest.mark.parametrize("change, words", [
    (dict(start=0.6, end=0.4), "start .0.6. must come before end"),
    (dict(strength=1.2), "strength is 1.2"),
    (dict(mode="depth"), "mode is 'depth'"),
])
def test_a_setting_the_server_would_refuse_is_told_and_not_kept(controller_setup, change, words) -> None:
    controller, _, _, document = controller_setup
    document.active_layer = "cat-id"
    controller.add_reference("reference")
    controller.set_reference(dataclasses.replace(ReferenceLayer("cat-id"), **change))
    assert "cannot be used" in controller.message
    assert re.search(words, controller.message, re.IGNORECASE)
    assert [r for r, _ in controller.references()] == [ReferenceLayer("cat-id")]


def test_an_unreadable_stored_list_starts_empty(controller_setup) -> None:
    _, _, workspace, document = controller_setup
    document.lists["references"] = b'{"version": 1, "references": [{"layer_id": "cat-id", "strength": 9}]}'
    assert Controller(ScriptedConnection(), workspace).references() == []


def test_upscale_and_live_frames_carry_the_references_and_follow_a_stroke_on_one(controller_setup) -> None:
    controller, connection, _, document = controller_setup
    document.active_layer = "cat-id"
    controller.add_reference("reference")
    controller.upscaling.refine = 0.3
    controller.upscale()
    assert [r.image.data for r in connection.sent[-1].reference] == [_own_picture(document, "cat-id", CAT)]

    controller.clock = clock = Clock()
    controller.settings.strength = 0.6
    controller.set_live(True)
    controller.poll()
    clock.now += 1.0
    controller.poll()  # nothing changed: no frame
    stroke = Rect(10, 200, 120, 4)  # a stroke on the reference layer, far from the cat
    document.rgbas["cat-id"] = ("Cat", bytes(a | b for a, b in zip(_layer(CAT, 99), _layer(stroke, 5), strict=True)))
    seen = document.pixels  # the quick token sees the active layer; here, the canvas stands in
    document.pixels = crop(seen, W, 0, 0, W, 200) + bytes(W * 4) + crop(seen, W, 0, 201, W, H - 201)
    clock.now += 1.0
    controller.poll()
    controller.set_reference(ReferenceLayer("cat-id", "style", 0.3))
    clock.now += 1.0
    controller.poll()
    frames = [m for m in connection.sent if isinstance(m, Live)]
    assert len(frames) == 3
    assert [(f.reference[0].mode, f.reference[0].strength) for f in frames] == [
        ("reference", DEFAULT_STRENGTH), ("reference", DEFAULT_STRENGTH), ("style", 0.3)]
    assert (frames[0].reference[0].image.width, frames[0].reference[0].image.height) == (CAT.width, CAT.height)
    grown = Rect(stroke.x, CAT.y, CAT.right - stroke.x, CAT.height)  # the layer's bounds with the stroke
    after = frames[1].reference[0].image
    assert (after.width, after.height) == (grown.width, grown.height)
    assert after.data == _own_picture(document, "cat-id", grown)
