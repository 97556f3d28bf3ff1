"""The plugin's controller with a fake document: jobs, previews, apply, discard, history, errors.

The connection here is scripted (it replays server messages), so each rule is checked alone;
tests/test_plugin_connection.py runs the same controller against a real server.
"""

from __future__ import annotations

from typing import Any

import pytest
from plugin_support import (
    WELCOME,
    Clock,
    FakeDocument,
    FakeWorkspace,
    ScriptedConnection,
    box_mask,
    connected_controller,
    solid,
)
from underpaint_krita.connection import Connected, Disconnected, Failed
from underpaint_krita.controller import Controller
from underpaint_krita.history import History
from underpaint_krita.preferences import MemoryPreferences
from underpaint_krita.session import LIVE

from shared import errors as codes
from shared.crop import Rect
from shared.messages import (
    Cancelled,
    Error,
    Finalize,
    Generate,
    Image,
    Live,
    LiveStop,
    Progress,
    Queued,
    Result,
    ResultImage,
)


def _result_image(x: int, y: int, w: int, h: int, colour: tuple[int, int, int, int]) -> Image:
    return Image(width=w, height=h, format="rgba8", data=solid(w, h, colour), x=x, y=y)


def _small_result(job_id: str, seed: int = 1) -> Result:
    """The server's answer to a job: one 4x4 picture."""
    image = ResultImage(_result_image(0, 0, 4, 4, (9, 9, 9, 255)), seed)
    return Result(id=job_id, images=[image], info={}, elapsed=0.1)


@pytest.fixture
def setup() -> tuple[Controller, ScriptedConnection, FakeWorkspace, FakeDocument]:
    return connected_controller(FakeDocument(64, 48), "a fox")


def test_connected_lists_usable_checkpoints_and_picks_the_first(setup) -> None:
    controller, _, _, _ = setup
    assert controller.server.connected
    assert controller.server.models == ["tiny-sd15", "tiny-sd15-inpaint"]
    assert controller.settings.model == "tiny-sd15"
    assert "underpaint/test" in controller.server.message


def test_a_job_from_request_to_preview(setup) -> None:
    controller, connection, _, document = setup
    changes = []
    controller.subscribe(lambda: changes.append(1))
    job_id = controller.generate()
    (request,) = connection.sent
    assert isinstance(request, Generate) and request.id == job_id and request.mode == "txt2img"
    assert controller.session().jobs[0].state == "waiting"

    preview = _result_image(0, 0, 8, 6, (1, 2, 3, 255))
    connection.reply(Queued(id=job_id, position=1), Progress(id=job_id, step=3, total=10, preview=preview))
    controller.poll()
    job = controller.session().jobs[0]
    assert (job.state, job.position, job.step, job.total, job.preview) == ("running", 1, 3, 10, preview)

    images = [ResultImage(_result_image(0, 0, 64, 48, (255, 0, 0, 255)), seed=5),
              ResultImage(_result_image(0, 0, 64, 48, (0, 255, 0, 255)), seed=6)]
    connection.reply(Result(id=job_id, images=images, info={}, elapsed=1.0))
    controller.poll()
    session = controller.session()
    assert session.jobs == [] and session.message == ""
    assert [e.id for e in session.history] == [f"{job_id}-0", f"{job_id}-1"]
    assert [e.seed for e in session.history] == [5, 6]
    assert session.shown == f"{job_id}-0"
    name, shown = document.preview
    assert name == "[Preview] a fox" and document.preview_visible
    assert shown.data == images[0].image.data
    assert [e.id for e in History.from_blob(document.history_blob)] == [e.id for e in session.history]
    assert changes  # the docker was told


def test_thumbnails_switch_the_preview_and_apply_adds_a_layer(setup) -> None:
    controller, connection, _, document = setup
    document.selection = box_mask(64, 48, Rect(10, 10, 20, 20))
    controller.settings.model = "tiny-sd15-inpaint"
    job_id = controller.generate()
    patch = [ResultImage(_result_image(2, 3, 40, 30, (0, 0, 255, 128)), seed=41),
             ResultImage(_result_image(2, 3, 40, 30, (0, 255, 0, 128)), seed=42)]
    connection.reply(Result(id=job_id, images=patch, info={}, elapsed=1.0))
    controller.poll()

    controller.show(f"{job_id}-1")
    assert document.preview[1].data == patch[1].image.data
    assert controller.session().shown == f"{job_id}-1"

    name = controller.apply()
    assert name == "[Generated] a fox (42)"
    ((layer_name, layer),) = document.layers
    assert layer_name == name
    assert (layer.x, layer.y, layer.width, layer.height) == (2, 3, 40, 30)
    assert layer.data == patch[1].image.data
    assert not document.preview_visible and controller.session().shown is None
    assert "[Generated] a fox (42)" in controller.message

    controller.apply(f"{job_id}-0")
    assert [n for n, _ in document.layers] == [name, "[Generated] a fox (41)"]


def test_discard_removes_the_result_and_its_preview(setup) -> None:
    controller, connection, _, document = setup
    job_id = controller.generate()
    connection.reply(_small_result(job_id))
    controller.poll()
    controller.discard(f"{job_id}-0")
    assert list(controller.session().history) == []
    assert not document.preview_visible
    assert list(History.from_blob(document.history_blob)) == []
    controller.apply(f"{job_id}-0")
    assert controller.message == "That result is no longer in the history."
    assert document.layers == []


def test_history_survives_a_new_controller(setup) -> None:
    controller, connection, workspace, document = setup
    job_id = controller.generate()
    connection.reply(_small_result(job_id, seed=77))
    controller.poll()
    reopened = Controller(ScriptedConnection(), workspace)
    (entry,) = reopened.session().history
    assert entry.seed == 77 and entry.prompt == "a fox"
    reopened.apply(entry.id)
    assert document.layers[-1][0] == "[Generated] a fox (77)"


def test_an_unreadable_stored_history_starts_a_new_one(setup) -> None:
    _, _, workspace, document = setup
    document.history_blob = b"garbage"
    assert len(Controller(ScriptedConnection(), workspace).session().history) == 0


@pytest.mark.parametrize(
    "event, message",
    [
        (Error(code=codes.OUT_OF_MEMORY, message="try a smaller batch", id="JOB"),
         "The graphics card ran out of memory. Try a smaller image, selection or batch. (Try a smaller batch.)"),
        (Error(code=codes.UNKNOWN_MODEL, message="no model 'x'", id="JOB", field="model"),
         "The server has no model of that name any more. Pick another model."),
        (Cancelled(id="JOB", reason="client asked"), "Cancelled."),
        (Failed("JOB", "connection_lost"), "The server stopped while generating. Reconnecting…"),
        (Cancelled(id="JOB", reason="server stopping"), "The server stopped while generating. Reconnecting…"),
        (Failed("JOB", "server_changed"),
         "The job was left behind when the plugin connected to another server. Generate again."),
        (Failed("JOB", "unreachable", "refused"), "Cannot reach the server. Is it running?"),
    ],
)
def test_job_failures_read_as_sentences(setup, event: Any, message: str) -> None:
    controller, connection, _, document = setup
    job_id = controller.generate()
    if isinstance(event, Failed):
        event.job_id = job_id
    else:
        event.id = job_id
    connection.reply(event)
    controller.poll()
    assert controller.session().jobs == []
    assert controller.message == message
    assert document.preview is None


def test_after_the_server_stopped_mid_job_reconnecting_says_it_is_back(setup) -> None:
    controller, connection, _, _ = setup
    job_id = controller.generate()
    connection.reply(Failed(job_id, "connection_lost"),
                     Disconnected("disconnected", "connection closed", 0.0, "127.0.0.1:9860"))
    controller.poll()
    assert controller.message == "The server stopped while generating. Reconnecting…"
    assert controller.server.message == "Lost the connection to the server. Reconnecting…"
    connection.reply(Disconnected("unreachable", "refused", 2.0, "127.0.0.1:9860"))
    controller.poll()
    assert controller.server.message == "Cannot reach the server at 127.0.0.1:9860. Is it running? Retrying in 2 s."
    connection.reply(Connected(WELCOME))
    controller.poll()
    assert controller.message == "The server stopped while generating; it is running again. Generate again."


def test_cancel_asks_for_every_job_of_the_document(setup) -> None:
    controller, connection, _, _ = setup
    ids = [controller.generate(), controller.generate()]
    controller.cancel()
    assert connection.cancelled == ids


def test_results_go_to_the_document_that_asked(setup) -> None:
    controller, connection, workspace, first = setup
    job_id = controller.generate()
    second = FakeDocument(32, 32)
    workspace.documents.append(second)
    workspace.active = second
    connection.reply(_small_result(job_id))
    controller.poll()
    assert first.preview is not None and second.preview is None
    assert len(controller.session().history) == 0  # the active (second) document has none
    workspace.active = first
    assert len(controller.session().history) == 1


def test_results_for_a_closed_document_are_dropped(setup) -> None:
    controller, connection, workspace, document = setup
    job_id = controller.generate()
    workspace.documents.clear()
    workspace.active = None
    connection.reply(_small_result(job_id))
    controller.poll()
    assert document.preview is None


def test_the_chosen_fill_mode_reaches_the_request_and_outlives_a_restart(setup) -> None:
    controller, connection, workspace, document = setup
    assert controller.settings.fill == "auto"
    document.selection = box_mask(64, 48, Rect(10, 10, 20, 20))
    controller.set_fill("remove")
    controller.generate()
    (request,) = connection.sent
    assert isinstance(request, Generate) and (request.mode, request.fill) == ("inpaint", "remove")

    # Restarting the docker or Krita makes a new controller over the same stored preferences.
    restarted = Controller(ScriptedConnection(), workspace, preferences=controller.preferences)
    assert restarted.settings.fill == "remove"


def test_an_unknown_stored_fill_mode_starts_as_auto(setup) -> None:
    _, _, workspace, document = setup
    preferences = MemoryPreferences({"fill": "outpaint"})  # e.g. left by another version of the plugin
    connection = ScriptedConnection()
    controller = Controller(connection, workspace, preferences=preferences)
    assert controller.settings.fill == "auto"
    controller.set_fill("smudge")
    assert controller.settings.fill == "auto" and preferences.read("fill") == "auto"
    connection.reply(Connected(WELCOME))
    controller.poll()
    document.selection = box_mask(64, 48, Rect(10, 10, 20, 20))
    controller.generate()
    (request,) = connection.sent
    assert request.fill == "auto"


def test_no_document_is_told_in_words() -> None:
    controller = Controller(ScriptedConnection(), FakeWorkspace())
    assert controller.generate() is None
    assert controller.message == "Open or create an image first."


def test_disconnect_keeps_the_models_and_says_when_it_retries(setup) -> None:
    controller, connection, _, _ = setup
    connection.reply(Disconnected("unreachable", "refused", 4.0))
    controller.poll()
    assert not controller.server.connected
    assert controller.server.message == "Cannot reach the server. Is it running? Retrying in 4 s."
    assert controller.server.models == ["tiny-sd15", "tiny-sd15-inpaint"]
    controller.generate()
    assert controller.message == "Waiting for the server…"
    connection.reply(Connected(WELCOME))
    controller.poll()
    assert controller.message == ""


def test_a_dropped_connection_says_it_reconnects(setup) -> None:
    controller, connection, _, _ = setup
    connection.reply(Disconnected("disconnected", "connection reset", 0.0))
    controller.poll()
    assert controller.server.message == "Lost the connection to the server. Reconnecting…"


def test_a_failing_document_reports_instead_of_raising(setup) -> None:
    controller, _, _, document = setup

    def broken(rect: Rect) -> bytes:
        raise RuntimeError("projection unavailable")

    document.read_pixels = broken
    controller.settings.strength = 0.5
    assert controller.generate() is None
    assert controller.message == ("The plugin failed; Krita's log has the details. "
                                  "(RuntimeError: projection unavailable.)")


@pytest.fixture
def live_setup(setup):
    controller, connection, workspace, document = setup
    controller.clock = clock = Clock()
    controller.settings.strength = 0.5
    controller.set_live(True)
    return controller, connection, document, clock


def _frames(connection: ScriptedConnection) -> list[Live]:
    return [m for m in connection.sent if isinstance(m, Live)]


def test_live_sends_a_frame_only_when_the_canvas_or_settings_change(live_setup) -> None:
    controller, connection, document, clock = live_setup
    controller.poll()
    (first,) = _frames(connection)
    assert (first.mode, first.strength, first.batch_size, first.preview, first.autoencoder) == (
        "img2img", 0.5, 1, False, "auto")
    assert first.image.bounds == (0, 0, 64, 48) and first.session == controller.session().live.id

    controller.poll()  # within the interval: nothing is even looked at
    clock.now += 1.0
    controller.poll()  # nothing changed
    assert len(_frames(connection)) == 1

    document.pixels = solid(64, 48, (200, 0, 0, 255))  # a stroke
    clock.now += 1.0
    controller.poll()
    controller.settings.prompt = "a red fox"
    clock.now += 1.0
    controller.poll()
    frames = _frames(connection)
    assert len(frames) == 3 and frames[1].image.data == document.pixels and frames[2].prompt == "a red fox"
    assert len({f.id for f in frames}) == 3 and {f.session for f in frames} == {first.session}


def test_live_reads_every_pixel_only_when_the_quick_token_moves_or_now_and_then(live_setup) -> None:
    controller, connection, document, clock = live_setup
    exact = []
    change_token = document.change_token
    document.change_token = lambda rect: exact.append(rect) or change_token(rect)
    controller.poll()
    for _ in range(5):  # an idle canvas: the cheap token only
        clock.now += 0.25
        controller.poll()
    assert len(exact) == 1 and len(_frames(connection)) == 1

    faint = bytearray(document.pixels)
    faint[64 * 4 + 1] ^= 1  # one level on row 1, a row the quick token does not see
    document.pixels = bytes(faint)
    clock.now += 0.25
    controller.poll()
    assert len(_frames(connection)) == 1  # not seen yet
    clock.now += controller.session().live.exact_interval
    controller.poll()
    assert len(_frames(connection)) == 2 and _frames(connection)[1].image.data == document.pixels


def test_live_with_a_selection_sends_inpaint_frames(live_setup) -> None:
    controller, connection, document, clock = live_setup
    document.selection = box_mask(64, 48, Rect(8, 8, 10, 10))
    controller.poll()
    (frame,) = _frames(connection)
    assert frame.mode == "inpaint" and frame.mask is not None


def test_live_replacing_the_background_watches_and_sends_the_whole_canvas(live_setup) -> None:
    controller, connection, document, clock = live_setup
    document.width, document.height = 1024, 768  # larger than a small selection's context
    document.pixels = solid(1024, 768, (90, 120, 150, 255))
    document.selection = box_mask(1024, 768, Rect(8, 8, 10, 10))

    def stroke_far_from_the_selection() -> None:
        pixels = bytearray(document.pixels)
        pixels[(700 * 1024 + 900) * 4] ^= 0xFF
        document.pixels = bytes(pixels)
        clock.now += 1.0
        controller.poll()

    controller.set_fill("replace_background")
    controller.poll()
    stroke_far_from_the_selection()  # the background is what is repainted, so it is watched
    frames = _frames(connection)
    assert [(f.fill, f.image.bounds) for f in frames] == [("replace_background", (0, 0, 1024, 768))] * 2
    assert frames[1].image.data == document.pixels

    controller.set_fill("fill")  # a new fill mode is a new frame, of the selection's context only
    clock.now += 1.0
    controller.poll()
    stroke_far_from_the_selection()
    assert [(f.fill, f.image.bounds) for f in _frames(connection)[2:]] == [("fill", (0, 0, 384, 384))]


def _live_picture(frame_id: str, colour: tuple[int, int, int, int], decoder: str = "tiny") -> Result:
    return Result(id=frame_id, images=[ResultImage(_result_image(0, 0, 64, 48, colour), 31)],
                  info={"decoder": decoder}, elapsed=0.2)


def test_live_pictures_replace_each_other_and_apply_at_full_quality(live_setup) -> None:
    controller, connection, document, clock = live_setup
    controller.poll()
    document.pixels = solid(64, 48, (1, 1, 1, 255))
    clock.now += 1.0
    controller.poll()
    old, new = _frames(connection)
    connection.reply(Cancelled(id=old.id, reason="superseded"), _live_picture(new.id, (0, 0, 9, 255)))
    controller.poll()
    assert controller.message == ""  # superseded frames pass silently
    assert document.preview[0] == "[Preview] a fox" and document.preview[1].data == solid(64, 48, (0, 0, 9, 255))
    assert len(controller.session().history) == 0  # live pictures do not fill the history
    assert controller.session().live.frames == {}  # finished frames are forgotten

    # The preview came from the tiny autoencoder: Apply asks the server for the frame at full quality,
    # once however often it is clicked, and keeps the preview until the layer is there.
    assert controller.apply() == "[Live] a fox (31)"
    assert controller.apply() == "[Live] a fox (31)"
    assert [m for m in connection.sent if isinstance(m, Finalize)] == [Finalize(id=new.id)]
    assert document.layers == [] and document.preview_visible
    assert controller.message == "Applying “[Live] a fox (31)” at full quality…"
    connection.reply(Queued(id=new.id, position=0), _live_picture(new.id, (0, 0, 10, 255), decoder="vae"))
    controller.poll()
    assert document.layers == [("[Live] a fox (31)", _result_image(0, 0, 64, 48, (0, 0, 10, 255)))]
    assert not document.preview_visible and controller.message == "Added the layer “[Live] a fox (31)”."


def test_a_live_picture_from_the_full_vae_applies_at_once(live_setup) -> None:
    controller, connection, document, clock = live_setup
    controller.poll()
    (frame,) = _frames(connection)
    connection.reply(_live_picture(frame.id, (0, 0, 9, 255), decoder="vae"))
    controller.poll()
    assert controller.apply() == "[Live] a fox (31)"
    assert not any(isinstance(m, Finalize) for m in connection.sent)
    assert document.layers == [("[Live] a fox (31)", _result_image(0, 0, 64, 48, (0, 0, 9, 255)))]


def _apply_a_live_picture(controller, connection):
    """The artist applies the first live picture (dark blue); its frame, whose finalize is asked for."""
    controller.poll()
    (frame,) = _frames(connection)
    connection.reply(_live_picture(frame.id, (0, 0, 9, 255)))
    controller.poll()
    controller.apply()
    return frame


@pytest.mark.parametrize("answer", [
    Error(code="not_found", message="no live frame is kept", id="FRAME", field="id"),
    Failed("FRAME", "connection_lost"),
])
def test_a_live_picture_the_server_cannot_finalize_applies_from_its_preview(live_setup, answer) -> None:
    controller, connection, document, clock = live_setup
    frame = _apply_a_live_picture(controller, connection)
    if isinstance(answer, Error):
        answer.id = frame.id
    else:
        answer.job_id = frame.id
    connection.reply(answer)
    controller.poll()
    assert document.layers == [("[Live] a fox (31)", _result_image(0, 0, 64, 48, (0, 0, 9, 255)))]
    assert "from the live preview" in controller.message


def test_a_full_quality_layer_waits_until_the_artist_stops_painting(live_setup) -> None:
    controller, connection, document, clock = live_setup
    frame = _apply_a_live_picture(controller, connection)
    document.painting = True
    connection.reply(_live_picture(frame.id, (0, 0, 10, 255), decoder="vae"))
    controller.poll()
    assert document.layers == []  # adding a layer now would end the stroke
    document.painting = False
    clock.now += controller.guard.settle
    controller.poll()
    assert [name for name, _ in document.layers] == ["[Live] a fox (31)"]


def test_live_reads_nothing_while_the_artist_paints_and_sends_the_stroke_once_they_stop(live_setup) -> None:
    controller, connection, document, clock = live_setup
    controller.poll()
    document.reads.clear()
    document.painting = True  # a stroke in progress: reading the canvas now would end it
    for level in range(1, 11):
        document.pixels = solid(64, 48, (level, 0, 0, 255))
        clock.now += 0.2
        controller.poll()
    assert len(_frames(connection)) == 1 and document.reads == []
    stroke_end = clock.now
    document.painting = False
    clock.now = stroke_end + 0.2  # stopped, not yet for the settle time
    controller.poll()
    assert len(_frames(connection)) == 1
    clock.now = stroke_end + controller.guard.settle + 0.01  # the first poll after it, not an interval later
    controller.poll()
    frames = _frames(connection)
    assert len(frames) == 2 and frames[1].image.data == document.pixels


def test_pictures_wait_until_the_artist_stops_painting(live_setup) -> None:
    controller, connection, document, clock = live_setup
    controller.poll()
    (frame,) = _frames(connection)
    document.painting = True
    connection.reply(Result(id=frame.id, images=[ResultImage(_result_image(0, 0, 64, 48, (0, 0, 9, 255)), 31)],
                            info={}, elapsed=0.2))
    controller.poll()
    clock.now += 1.0
    controller.poll()
    assert document.preview is None  # writing the preview layer now would end the stroke
    assert controller.session().shown == LIVE and controller.session().live_result.seed == 31
    document.painting = False
    clock.now += controller.guard.settle
    controller.poll()
    assert document.preview[0] == "[Preview] a fox" and document.preview[1].data == solid(64, 48, (0, 0, 9, 255))


def test_a_result_that_waits_for_a_stroke_is_not_shown_after_it_was_applied(setup) -> None:
    controller, connection, _, document = setup
    job_id = controller.generate()
    document.painting = True
    connection.reply(_small_result(job_id, seed=7))
    controller.poll()
    assert document.preview is None and len(controller.session().history) == 1
    document.painting = False
    assert controller.apply() == "[Generated] a fox (7)"  # from the docker, before the picture was shown
    controller.guard.settle = 0.0
    controller.poll()
    assert document.preview is None and [name for name, _ in document.layers] == ["[Generated] a fox (7)"]


def test_stopping_live_tells_the_server_and_ignores_late_frames(live_setup) -> None:
    controller, connection, document, clock = live_setup
    controller.poll()
    (frame,) = _frames(connection)
    session_id = frame.session
    controller.set_live(False)
    assert isinstance(connection.sent[-1], LiveStop) and connection.sent[-1].session == session_id
    connection.reply(_small_result(frame.id))
    clock.now += 1.0
    controller.poll()
    assert document.preview is None and len(_frames(connection)) == 1


def test_live_waits_for_a_connection_and_lost_frames_pass_silently(live_setup) -> None:
    controller, connection, document, clock = live_setup
    connection.reply(Disconnected("unreachable", "refused", 1.0))
    controller.poll()
    assert _frames(connection) == []
    connection.reply(Connected(WELCOME))
    controller.poll()
    (frame,) = _frames(connection)
    connection.reply(Failed(frame.id, "connection_lost"))
    controller.poll()
    assert controller.message == ""
