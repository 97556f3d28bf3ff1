"""Control layers in the plugin: stored per document, each layer's pixels read over the part of the canvas the
request reads (placed where they lie), carried in generate and live requests."""

from __future__ import annotations

import dataclasses
import re

import pytest
from plugin_support import Clock, FakeDocument, ScriptedConnection, box_mask, connected_controller, gradient
from underpaint_krita.controller import Controller
from underpaint_krita.controls import KINDS, ControlLayer, Controls
from underpaint_krita.errors import UserError
from underpaint_krita.requests import Settings, build_request

from shared import codec
from shared.crop import Rect, context_rect, edge_defaults
from shared.images import crop
from shared.messages import CONTROL_KINDS, MAX_CONTROLS, Generate, Live

W, H = 1200, 900
# Sketch lines: black strokes on a transparent layer, as an artist draws them.
LINES = (Rect(100, 200, 600, 3), Rect(807, 611, 5, 200))
DEPTH = Rect(0, 450, 1200, 450)


def _layer(boxes: tuple[Rect, ...], rgba: tuple[int, int, int, int]) -> bytes:
    """A full-canvas RGBA layer, transparent but for `boxes`."""
    pixels = bytearray(W * H * 4)
    for box in boxes:
        for y in range(box.y, box.bottom):
            pixels[(y * W + box.x) * 4:(y * W + box.right) * 4] = bytes(rgba) * box.width
    return bytes(pixels)


def _document(**kwargs) -> FakeDocument:
    document = FakeDocument(W, H, pixels=gradient(W, H), **kwargs)
    document.rgbas = {"sketch-id": ("Sketch", _layer(LINES, (0, 0, 0, 255))),
                      "depth-id": ("Depth map", _layer((DEPTH,), (200, 200, 200, 255)))}
    return document


CONTROLS = (ControlLayer("sketch-id", "scribble", 0.8, 0.0, 0.6), ControlLayer("depth-id", "depth", 1.5, 0.2, 1.0))


def _decoded(request):
    """As the server reads it: the codec's validation included."""
    return codec.decode_client(codec.encode(request))


@pytest.mark.parametrize("strength, mode", [(0.5, "img2img"), (1.0, "txt2img")])
def test_without_selection_every_control_spans_the_canvas(strength: float, mode: str) -> None:
    document = _document()
    request = _decoded(build_request(document, Settings(model="m", strength=strength), "j", controls=CONTROLS))
    assert request.mode == mode
    sketch, depth = request.control
    assert [(c.kind, c.strength, c.start, c.end) for c in request.control] == [("scribble", 0.8, 0.0, 0.6),
                                                                               ("depth", 1.5, 0.2, 1.0)]
    assert sketch.image.bounds == depth.image.bounds == (0, 0, W, H)
    assert sketch.image.format == "rgba8" and sketch.image.data == document.rgbas["sketch-id"][1]
    assert depth.image.data == document.rgbas["depth-id"][1]


@pytest.mark.parametrize("box, kinds", [
    # Odd offsets and sizes; a control with nothing painted in the crop is left out.
    (Rect(803, 651, 13, 17), ["scribble", "depth"]),
    (Rect(301, 181, 37, 29), ["scribble"]),
    (Rect(151, 701, 9, 7), ["depth"]),
    (Rect(1001, 51, 17, 23), []),
    (Rect(601, 399, 251, 333), ["scribble", "depth"]),
])
def test_with_a_selection_control_images_are_cropped_like_the_image(box: Rect, kinds: list[str]) -> None:
    document = _document(selection=box_mask(W, H, box))
    request = _decoded(build_request(document, Settings(model="m"), "j", controls=CONTROLS))
    rect = context_rect(box, Rect(0, 0, W, H), edge_defaults(box))
    assert request.mode == "inpaint" and request.image.bounds == (rect.x, rect.y, rect.width, rect.height)
    assert [c.kind for c in request.control] == kinds
    ids = {"scribble": "sketch-id", "depth": "depth-id"}
    for control in request.control:
        assert control.image.bounds == request.image.bounds
        full = document.rgbas[ids[control.kind]][1]
        assert control.image.data == crop(full, W, rect.x, rect.y, rect.width, rect.height)


def test_a_deleted_layer_or_an_empty_one_is_left_out() -> None:
    document = _document()
    document.rgbas["sketch-id"] = ("Sketch", bytes(W * H * 4))  # erased
    del document.rgbas["depth-id"]
    assert build_request(document, Settings(model="m"), "j", controls=CONTROLS).control == []


def test_stored_controls_round_trip_and_bad_blobs_name_the_problem() -> None:
    controls = Controls(list(CONTROLS))
    controls.set(ControlLayer("sketch-id", "lineart", 1.2))  # new settings keep the layer's place
    assert list(Controls.from_json(controls.to_json())) == [ControlLayer("sketch-id", "lineart", 1.2), CONTROLS[1]]


@pytest.mark.parametrize("blob, words", [
    (b"\xff", "not JSON"),
    (b"[]", "version"),
    (b'{"version": 2, "controls": []}', "version"),
    (b'{"version": 1, "controls": ["sketch-id"]}', r"controls\[0\]"),
    (b'{"version": 1, "controls": [{"kind": "depth"}]}', r"controls\[0\].*layer_id"),
    (b'{"version": 1, "controls": [{"layer_id": "a", "colour": "red"}]}', "colour"),
    (b'{"version": 1, "controls": [{"layer_id": 7}]}', "layer_id must be text"),
    (b'{"version": 1, "controls": [{"layer_id": "a", "kind": "normal"}]}', "kind is 'normal'"),
    (b'{"version": 1, "controls": [{"layer_id": "a", "strength": 2.5}]}', "strength is 2.5"),
    (b'{"version": 1, "controls": [{"layer_id": "a", "strength": "1"}]}', "strength is '1'"),
    (b'{"version": 1, "controls": [{"layer_id": "a", "end": -0.1}]}', "end is -0.1"),
    (b'{"version": 1, "controls": [{"layer_id": "a", "start": 0.5, "end": 0.5}]}', "start .0.5. must come before end"),
])
def test_a_bad_stored_list_names_what_is_wrong(blob: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Controls.from_json(blob)


def test_at_most_the_protocols_number_of_controls() -> None:
    controls = Controls([ControlLayer(str(i)) for i in range(MAX_CONTROLS)])
    with pytest.raises(UserError, match=f"at most {MAX_CONTROLS}"):
        controls.set(ControlLayer("one-more"))
    controls.set(ControlLayer("0", "depth"))  # a layer that is a control already: no new one
    assert len(controls) == MAX_CONTROLS and controls.get("0").kind == "depth"
    stored = Controls([ControlLayer(str(i)) for i in range(MAX_CONTROLS + 2)]).to_json()
    assert len(Controls.from_json(stored)) == MAX_CONTROLS  # a longer list stored by hand is cut


def test_every_kind_of_the_protocol_has_a_label() -> None:
    assert tuple(KINDS) == CONTROL_KINDS


@pytest.fixture
def controller_setup():
    return connected_controller(_document(), "a castle on a hill")


def test_the_active_layer_becomes_a_control_stored_in_the_document(controller_setup) -> None:
    controller, connection, workspace, document = controller_setup
    assert controller.add_control("scribble") is None and "Select the layer" in controller.message
    document.active_layer = "sketch-id"
    assert controller.add_control("scribble") == "sketch-id"
    controller.set_control(ControlLayer("sketch-id", "scribble", 0.7, 0.0, 0.5))
    document.active_layer = "depth-id"
    controller.add_control("depth")
    document.active_layer = "sketch-id"
    controller.add_control("lineart")  # a new kind keeps the strength and range
    assert controller.controls() == [(ControlLayer("sketch-id", "lineart", 0.7, 0.0, 0.5), "Sketch"),
                                     (ControlLayer("depth-id", "depth"), "Depth map")]
    controller.generate()
    (request,) = [m for m in connection.sent if isinstance(m, Generate)]
    assert [(c.kind, c.strength, c.end) for c in request.control] == [("lineart", 0.7, 0.5), ("depth", 1.0, 1.0)]

    # Saved and reopened: a new controller finds the controls in the document.
    reopened = Controller(ScriptedConnection(), workspace)
    assert [c for c, _ in reopened.controls()] == [c for c, _ in controller.controls()]

    controller.remove_control("sketch-id")
    del document.rgbas["depth-id"]  # the artist deleted the depth layer
    assert controller.controls() == []
    assert list(Controls.from_json(document.lists["controls"])) == []


@pytest.mark.parametrize("change, words", [
    (dict(start=0.6, end=0.4), "start .0.6. must come before end"),
    (dict(strength=3.0), "strength is 3.0"),
    (dict(kind="normal"), "kind is 'normal'"),
])
def test_a_setting_the_server_would_refuse_is_told_and_not_kept(controller_setup, change, words) -> None:
    controller, _, _, document = controller_setup
    document.active_layer = "sketch-id"
    controller.add_control("scribble")
    controller.set_control(dataclasses.replace(ControlLayer("sketch-id"), **change))
    assert "cannot be used" in controller.message
    assert re.search(words, controller.message, re.IGNORECASE)
    assert [c for c, _ in controller.controls()] == [ControlLayer("sketch-id")]


def test_a_refined_upscale_carries_the_controls_and_a_plain_one_none(controller_setup) -> None:
    controller, connection, _, document = controller_setup
    document.active_layer = "sketch-id"
    controller.add_control("tile")
    controller.upscaling.refine = 0.3
    controller.upscale()
    (control,) = connection.sent[-1].control
    assert (control.kind, control.image.x, control.image.y) == ("tile", 0, 0)
    assert (control.image.width, control.image.height) == (connection.sent[-1].image.width,
                                                           connection.sent[-1].image.height)
    controller.upscaling.refine = 0.0  # nothing to steer: the server would refuse controls
    controller.upscale()
    assert connection.sent[-1].control == []


def test_an_unreadable_stored_control_list_starts_empty(controller_setup) -> None:
    _, _, workspace, document = controller_setup
    document.lists["controls"] = b'{"version": 1, "controls": [{"layer_id": "sketch-id", "kind": "normal"}]}'
    assert Controller(ScriptedConnection(), workspace).controls() == []


def test_live_frames_carry_controls_and_follow_a_stroke_on_the_control_layer(controller_setup) -> None:
    """The headline: sketch lines in, a frame that follows them out; each new stroke sends a new frame."""
    controller, connection, _, document = controller_setup
    controller.clock = clock = Clock()
    controller.settings.strength = 0.6
    document.active_layer = "sketch-id"
    controller.add_control("scribble")
    controller.set_live(True)
    controller.poll()
    clock.now += 1.0
    controller.poll()  # nothing changed: no frame
    stroke = Rect(400, 500, 120, 4)
    sketch = _layer(LINES + (stroke,), (0, 0, 0, 255))
    document.rgbas["sketch-id"] = ("Sketch", sketch)
    # What the artist sees changes with the stroke too.
    seen = document.pixels
    document.pixels = crop(seen, W, 0, 0, W, 500) + bytes(W * 4) + crop(seen, W, 0, 501, W, H - 501)
    clock.now += 1.0
    controller.poll()
    controller.set_control(ControlLayer("sketch-id", "scribble", 1.3))
    clock.now += 1.0
    controller.poll()
    frames = [m for m in connection.sent if isinstance(m, Live)]
    assert len(frames) == 3
    assert [f.control[0].strength for f in frames] == [1.0, 1.0, 1.3]
    assert frames[0].control[0].image.data == _layer(LINES, (0, 0, 0, 255))
    assert frames[1].control[0].image.data == sketch and frames[1].control[0].image.bounds == (0, 0, W, H)
