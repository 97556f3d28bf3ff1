"""The plugin and large canvases, without Krita: the detail setting, the Upscale action, what the
preview says (docs/upscale.md)."""

from __future__ import annotations

from dataclasses import replace

from plugin_support import WELCOME, Clock, FakeDocument, connected_controller
from underpaint_krita.connection import Connected
from underpaint_krita.controller import Controller
from underpaint_krita.preferences import MemoryPreferences

from shared.messages import Image, Limits, ModelInfo, Progress, Result, ResultImage


def result(job_id: str, width: int, height: int, info: dict | None = None, fmt: str = "rgba8") -> Result:
    image = Image(width=width, height=height, format=fmt, data=bytes([7, 8, 9, 255]) * (width * height))
    return Result(id=job_id, images=[ResultImage(image, 3)], info=info or {}, elapsed=0.1)


def test_detail_is_sent_remembered_and_never_slows_live_frames() -> None:
    document = FakeDocument(64, 48)
    preferences = MemoryPreferences()
    controller, connection, _, _ = connected_controller(document, "a fox")
    controller.preferences = preferences
    controller.set_detail("full")
    controller.generate()
    assert connection.sent[-1].detail == "full" and connection.sent[-1].fit_native
    assert preferences.read("detail") == "full"
    restarted = Controller(connection, controller.workspace, preferences=preferences)
    assert restarted.settings.detail == "full"
    assert Controller(connection, controller.workspace, preferences=MemoryPreferences({"detail": "huge"})
                      ).settings.detail == "fast"  # a value another version left

    controller.settings.strength = 0.5
    controller.set_live(True)
    controller.poll()
    assert connection.sent[-1].TYPE == "live" and connection.sent[-1].detail == "fast"


def test_the_preview_says_how_a_large_canvas_was_made() -> None:
    controller, connection, _, document = connected_controller(FakeDocument(64, 48), "a fox")
    for detail, note in [("fast", "(enlarged: Detail fast)"), ("full", "(full resolution)"), (None, "")]:
        job_id = controller.generate()
        connection.reply(result(job_id, 64, 48, {"detail": detail} if detail else {}))
        controller.poll()
        assert document.preview[0] == "[Preview] a fox" + (f" {note}" if note else "")


def test_upscale_scales_the_canvas_and_adds_the_result_as_a_layer() -> None:
    controller, connection, _, document = connected_controller(FakeDocument(40, 30), "a fox")
    controller.clock = clock = Clock()
    controller.upscaling.scale, controller.upscaling.upscaler, controller.upscaling.refine = 4, "esrgan", 0.3
    job_id = controller.upscale()
    request = connection.sent[-1]
    assert (request.mode, request.scale, request.upscaler, request.strength) == ("upscale", 4, "esrgan", 0.3)
    assert (request.image.width, request.image.height, request.result_format) == (40, 30, "rgba8")

    connection.reply(Progress(id=job_id, step=0, total=0, tile=2, tiles=9))
    controller.poll()
    assert (controller.session().jobs[0].tile, controller.session().jobs[0].tiles) == (2, 9)
    document.painting = True  # a result that arrives mid-stroke waits for the stroke to end
    connection.reply(result(job_id, 160, 120))
    controller.poll()
    assert document.scaled == [] and document.size == (40, 30)
    document.painting = False
    clock.now += 1.0
    controller.poll()
    assert document.scaled == [4] and document.size == (160, 120)
    name, image = document.layers[-1]
    assert name == "[Generated] upscaled x4 a fox" and (image.width, image.height) == (160, 120)
    assert "Scaled the canvas 4x" in controller.message
    assert not list(controller.session().history)  # the layer is the result; the history stays small


def test_an_upscale_too_large_for_one_message_asks_for_png() -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(64, 64), "")
    connection.reply(Connected(replace(WELCOME, limits=Limits(max_message=2 * 1024 * 1024))))
    controller.poll()
    controller.upscaling.scale = 4
    controller.upscale()
    assert connection.sent[-1].result_format == "rgba8"  # 256² x 4 bytes: fits
    controller.upscaling.scale = 4
    controller.connection.reply(Connected(replace(WELCOME, limits=Limits(max_message=1024 * 1024 + 1000))))
    controller.poll()
    controller.upscale()
    assert connection.sent[-1].result_format == "png"


def test_the_upscalers_the_server_lists() -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(8, 8), "")
    models = [*WELCOME.models, ModelInfo(name="4x-esrgan", kind="upscaler", scale=4),
              ModelInfo(name="armed", kind="upscaler", refused="pickle")]
    connection.reply(Connected(replace(WELCOME, models=models)))
    controller.poll()
    assert controller.upscalers() == [("4x-esrgan", 4)]
    assert "4x-esrgan" not in controller.server.models  # not a checkpoint
