"""A control layer made from the canvas: the plugin sends what a generate would read as `preprocess`, and
the server's answer comes in as a new hidden layer at its place, a control of that kind, stored in the
document. The controller against a scripted server here, and through a real server at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from plugin_support import (
    Clock,
    FakeDocument,
    FakeWorkspace,
    ScriptedConnection,
    box_mask,
    connected_controller,
    gradient,
    server_url_or_own,
)
from underpaint_krita.connection import Backoff, Connection, Failed
from underpaint_krita.controller import Controller
from underpaint_krita.controls import KINDS, PREPROCESS_KINDS, ControlLayer, Controls
from underpaint_krita.errors import UserError
from underpaint_krita.requests import Settings, build_preprocess, build_request

from shared import codec
from shared.crop import Rect, context_rect, edge_defaults
from shared.images import crop
from shared.messages import MAX_CONTROLS, Cancelled, Error, Image, PreprocessKind, Result, ResultImage

W, H = 1200, 900


def _document(**kwargs) -> FakeDocument:
    return FakeDocument(W, H, pixels=gradient(W, H), **kwargs)


def _answer(request, colour: tuple[int, int, int, int] = (255, 255, 255, 255)) -> Result:
    """What the server answers: one image as large as the request's, at its place."""
    image = request.image
    made = Image(width=image.width, height=image.height, format="rgba8", x=image.x, y=image.y,
                 data=bytes(colour) * (image.width * image.height))
    return Result(id=request.id, images=[ResultImage(image=made, seed=0)], info={"preprocess": request.kind},
                  elapsed=0.01)


@pytest.mark.parametrize("box, fill", [
    (None, "auto"),
    (Rect(601, 399, 251, 333), "auto"),  # odd offsets: the selection's context region
    (Rect(3, 751, 11, 7), "expand"),  # at the canvas's edge
    (Rect(1050, 20, 149, 33), "fill"),
    (Rect(601, 399, 251, 333), "replace_background"),  # a fill mode that reads the whole canvas
])
def test_the_canvas_is_read_as_a_generate_reads_it(box: Rect | None, fill: str) -> None:
    document = _document(selection=None if box is None else box_mask(W, H, box))
    request = codec.decode_client(codec.encode(build_preprocess(document, "canny", fill, "p")))
    # Refining, so that a generate without a selection reads the canvas too.
    generate = build_request(document, Settings(model="m", strength=0.5, fill=fill), "g")
    assert request.kind == "canny" and request.image.bounds == generate.image.bounds
    x, y, width, height = request.image.bounds
    assert request.image.data == generate.image.data == crop(document.pixels, W, x, y, width, height)
    assert document.reads.count(Rect(x, y, width, height)) == 2  # read once each, nothing more


def test_only_the_kinds_the_server_makes_are_asked_for() -> None:
    assert PREPROCESS_KINDS == get_args(PreprocessKind) and set(PREPROCESS_KINDS) <= set(KINDS)
    for kind in ("tile", "normal"):
        with pytest.raises(UserError, match=f"makes no '{kind}' control from the canvas, only Canny edges"):
            build_preprocess(_document(), kind, "auto", "p")


@pytest.fixture
def setup():
    return connected_controller(_document(), "a castle")


def test_the_answer_becomes_a_hidden_control_layer_at_its_place(setup) -> None:
    """The headline: click, answer, a new layer linked as a control of that kind, sent with the next generate."""
    controller, connection, workspace, document = setup
    box = Rect(601, 399, 251, 333)
    document.selection = box_mask(W, H, box)
    job_id = controller.control_from_canvas("canny")
    (request,) = connection.sent
    assert request.id == job_id and request.kind == "canny"
    region = context_rect(box, Rect(0, 0, W, H), edge_defaults(box))
    assert request.image.bounds == (region.x, region.y, region.width, region.height)
    session = controller.session()
    assert session.making_control() and [job.makes_control for job in session.jobs] == [True]
    assert controller.message == ""

    answer = _answer(request)
    connection.reply(answer)
    controller.poll()
    assert not session.jobs and not session.making_control()
    ((name, image),) = document.layers
    assert name == "[Control] canny" and image == answer.images[0].image
    assert document.pixels == gradient(W, H)  # hidden: what the canvas shows is unchanged
    (control, layer_name), = controller.controls()
    assert control == ControlLayer(control.layer_id, "canny") and layer_name == "[Control] canny"
    assert list(Controls.from_json(document.lists["controls"])) == [control]  # stored in the document
    assert controller.message == "Added the control layer “[Control] canny” (hidden; it steers the next pictures)."

    controller.settings.model = "tiny-sd15"
    controller.generate()
    (sent,) = connection.sent[1].control
    assert sent.kind == "canny" and sent.image.bounds == answer.images[0].image.bounds
    assert sent.image.data == answer.images[0].image.data


def test_the_layer_waits_until_the_artist_stops_painting(setup) -> None:
    controller, connection, _, document = setup
    controller.clock = clock = Clock()
    controller.control_from_canvas("scribble")
    document.painting = True  # adding a layer now would end the stroke
    connection.reply(_answer(connection.sent[0]))
    controller.poll()
    assert document.layers == [] and not controller.session().jobs and controller.controls() == []
    document.painting = False
    clock.now += controller.guard.settle
    controller.poll()
    assert [name for name, _ in document.layers] == ["[Control] scribble"]
    assert [c.kind for c, _ in controller.controls()] == ["scribble"]


@pytest.mark.parametrize("reply, words", [
    (lambda r: Error(id=r.id, code="unsupported", message="no depth model is installed", field="kind"),
     "The server cannot do this with the chosen model. (No depth model is installed.)"),
    (lambda r: Cancelled(id=r.id, reason="cancelled before it was sent"), "Cancelled."),
    (lambda r: Failed(r.id, "connection_lost"), "The server stopped while generating. Reconnecting…"),
])
def test_a_failure_is_told_and_adds_nothing(setup, reply, words) -> None:
    controller, connection, _, document = setup
    controller.control_from_canvas("depth")
    connection.reply(reply(connection.sent[0]))
    controller.poll()
    assert controller.message == words
    assert document.layers == [] and controller.controls() == [] and not controller.session().making_control()


def test_cancel_cancels_it_like_any_job(setup) -> None:
    controller, connection, _, _ = setup
    job_id = controller.control_from_canvas("lineart")
    controller.cancel()
    assert connection.cancelled == [job_id]


def test_without_a_connection_it_waits_for_the_server(setup) -> None:
    controller, connection, _, _ = setup
    controller.server.connected = False
    controller.control_from_canvas("softedge")
    assert controller.message == "Waiting for the server…" and len(connection.sent) == 1


def test_with_every_control_taken_nothing_is_sent(setup) -> None:
    controller, connection, _, document = setup
    session = controller.session()
    for i in range(MAX_CONTROLS):
        session.layers.set_control(ControlLayer(f"layer-{i}"))
    controller.control_from_canvas("canny")
    assert connection.sent == [] and "as many control layers as the server takes" in controller.message


def test_a_control_list_filled_meanwhile_keeps_the_layer_unlinked(setup) -> None:
    controller, connection, _, document = setup
    controller.control_from_canvas("canny")
    session = controller.session()
    for i in range(MAX_CONTROLS):
        session.layers.set_control(ControlLayer(f"layer-{i}"))
    connection.reply(_answer(connection.sent[0]))
    controller.poll()
    assert [name for name, _ in document.layers] == ["[Control] canny"]
    assert len(session.layers.controls) == MAX_CONTROLS and all(c.kind == "scribble" for c in session.layers.controls)
    assert controller.message.startswith("Added the layer “[Control] canny”, but not as a control: This image has "
                                         "as many control layers")


def test_without_a_document_it_says_so() -> None:
    controller = Controller(ScriptedConnection(), FakeWorkspace())
    assert controller.control_from_canvas("canny") is None
    assert controller.message == "Open or create an image first."


# --- through a real server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_server_url(request: pytest.FixtureRequest, models_dir: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from server_url_or_own(request, models_dir, tmp_path_factory)


def _until(controller: Controller, condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        controller.poll()
        time.sleep(0.02)
    return condition()


def test_through_a_real_server(plugin_server_url: str) -> None:
    """A red square on grey, an odd selection: the layer is the server's Canny edges of exactly the part of the
    canvas an inpaint reads, at its place; without a depth model installed, depth is refused in words."""
    from server.imaging.preprocess import PREPROCESSORS

    square = Rect(650, 450, 301, 201)
    pixels = bytearray(bytes([128, 128, 128, 255]) * (W * H))
    for y in range(square.y, square.bottom):
        pixels[(y * W + square.x) * 4:(y * W + square.right) * 4] = bytes([220, 20, 20, 255]) * square.width
    box = Rect(601, 399, 251, 333)
    document = FakeDocument(W, H, pixels=bytes(pixels), selection=box_mask(W, H, box))
    connection = Connection(plugin_server_url, backoff=Backoff(first=0.1, factor=2.0, limit=0.5))
    controller = Controller(connection, FakeWorkspace([document], document))
    connection.start()
    try:
        assert _until(controller, lambda: controller.server.connected)
        controller.control_from_canvas("canny")
        request = controller.session().jobs[0].request
        assert _until(controller, lambda: bool(document.layers)), controller.message
        ((name, made),) = document.layers
        assert name == "[Control] canny" and made.bounds == request.image.bounds
        x, y, width, height = request.image.bounds
        rgb = np.frombuffer(crop(document.pixels, W, x, y, width, height), np.uint8).reshape(height, width, 4)[..., :3]
        edges = PREPROCESSORS["canny"](np.ascontiguousarray(rgb))
        layer = np.frombuffer(made.data, np.uint8).reshape(height, width, 4)
        assert layer[..., :3].tolist() == edges.tolist() and (layer[..., 3] == 255).all()
        assert edges.any()  # the square's edges lie in the region
        ((control, layer_name),) = controller.controls()
        assert (control.kind, layer_name) == ("canny", "[Control] canny")

        controller.control_from_canvas("depth")
        assert _until(controller, lambda: not controller.session().jobs)
        assert controller.message.startswith("The server cannot do this with the chosen model. (No depth model")
        assert len(document.layers) == 1
    finally:
        connection.stop()
