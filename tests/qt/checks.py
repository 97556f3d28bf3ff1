"""The plugin's Qt-facing modules under one Qt binding, with stand-ins for Krita's modules.

run.py runs every `check_*` here in a process playing Krita 5 (PyQt5) or Krita 6 (PyQt6), and
tests/test_plugin_qt.py makes each check a test for each binding. The checks assert themselves.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import docker_layout
import krita
import underpaint_krita
from krita import QT_MAJOR, SRGB_PROFILE, DockWidgetFactoryBase, Krita, QtCore, QtGui, QtWidgets
from plugin_support import WELCOME, FakeDocument, ScriptedConnection, box_mask, connected_controller, solid
from underpaint_krita import qt
from underpaint_krita.connection import Connected
from underpaint_krita.controller import Controller
from underpaint_krita.controls import PREPROCESS_KINDS
from underpaint_krita.docker import DOCKER_ID, NOT_STARTED, UnderpaintDocker
from underpaint_krita.document import KritaDocument, KritaWorkspace
from underpaint_krita.extension import UnderpaintExtension
from underpaint_krita.qimage import from_bgra, from_image, pixel_bytes, rgba_bytes, shrunk, shrunk_in_bands
from underpaint_krita.requests import FILL_MODES
from underpaint_krita.sections.base import MIN_WIDTH
from underpaint_krita.sections.job import LIVE_COLOUR
from underpaint_krita.styles import StyleLibrary

from shared.crop import Rect
from shared.images import encode_png
from shared.messages import (
    Cancelled,
    Image,
    ListModels,
    LiveStop,
    ModelDefaults,
    ModelInfo,
    ModelList,
    Preprocess,
    Progress,
    Queued,
    Result,
    ResultImage,
)
from shared.training import Train
from testing.processes import free_port

RED_BGRA = bytes([0, 0, 255, 255])
ROLE = QtCore.Qt.ItemDataRole


def _pump(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Run the event loop (the plugin's timers) until `condition()` or the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        krita.APPLICATION.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _rgba(width: int, height: int) -> bytes:
    """Every pixel different, alpha included (straight alpha must survive every conversion)."""
    return bytes((i * 7 + c * 50) % 256 if c < 3 else 64 + (i * 13) % 192 for i in range(width * height)
                 for c in range(4))


def check_every_module_imports_with_this_binding_only() -> None:
    names = [m.name for m in pkgutil.walk_packages(underpaint_krita.__path__, "underpaint_krita.")]
    for name in names:
        importlib.import_module(name)
    assert {"underpaint_krita.docker", "underpaint_krita.document", "underpaint_krita.extension",
            "underpaint_krita.sections.results"} <= set(names), names
    assert qt.BINDING == f"PyQt{QT_MAJOR}"
    other = "PyQt5" if QT_MAJOR == 6 else "PyQt6"
    assert not [m for m in sys.modules if m.split(".")[0] == other]
    assert qt.QAction.__module__ == f"PyQt{QT_MAJOR}.{'QtGui' if QT_MAJOR == 6 else 'QtWidgets'}"


def check_the_package_registers_an_extension_that_runs_the_docker() -> None:
    """As at Krita's start: the package registers the extension and the docker factory; the
    extension connects to the address in Krita's settings, the docker shows it and, through the
    extension's poll timer, that nothing answers there."""
    krita_app = Krita.instance()
    (extension,) = [e for e in krita_app.extensions() if isinstance(e, UnderpaintExtension)]
    (factory,) = krita_app.factories
    assert factory.id == DOCKER_ID and factory.position is DockWidgetFactoryBase.DockPosition.DockRight
    url = f"ws://127.0.0.1:{free_port()}"
    krita_app.writeSetting("underpaint", "server_url", url)
    extension.setup()
    try:
        docker = factory.createDockWidget()
        assert isinstance(docker, UnderpaintDocker) and docker.controller is extension.controller
        assert docker.objectName() == DOCKER_ID and docker.windowTitle() == "Underpaint"
        assert docker.server.url.text() == url
        assert _pump(lambda: docker.server.status.text().startswith("○ Cannot reach the server")), \
            docker.server.status.text()
        docker.deleteLater()
    finally:
        extension.controller.connection.stop()


def check_the_docker_builds_its_sections_and_shows_the_server() -> None:
    controller, _, _, document = connected_controller(FakeDocument(64, 48), "a fox")
    docker = UnderpaintDocker(controller)
    body = docker.widget().widget().layout()
    sections = [type(body.itemAt(i).widget()).__name__ for i in range(body.count())]
    assert sections == ["StyleSection", "ServerSection", "PromptSection", "GenerationSection", "JobSection",
                        "AdvancedSection", "RegionsSection", "ControlsSection", "ReferencesSection", "UpscaleSection",
                        "ResultsSection"]
    detail = docker.generation.detail
    assert [detail.itemData(i) for i in range(detail.count())] == ["fast", "full"]
    detail.setCurrentIndex(detail.findData("full"))
    assert controller.settings.detail == "full" and controller.preferences.read("detail") == "full"
    upscale = docker.upscale
    assert [upscale.upscaler.itemText(i) for i in range(upscale.upscaler.count())] == ["Lanczos (no model)"]
    upscale.scale.setCurrentIndex(upscale.scale.findData(4))
    upscale.refine.setValue(30)
    upscale.button.click()
    sent = controller.connection.sent[-1]
    assert (sent.mode, sent.scale, sent.upscaler, sent.strength) == ("upscale", 4, None, 0.3)
    assert docker.server.status.text() == "● Connected to underpaint/test on cpu"
    # The model picker: usable models, then the refused ones greyed, each with the reason as its tooltip.
    model = docker.prompt.model
    assert [model.itemText(i) for i in range(model.count())] == ["tiny-sd15", "tiny-sd15-inpaint",
                                                                 "broken (cannot be used)"]
    enabled = [bool(model.model().item(i).flags() & QtCore.Qt.ItemFlag.ItemIsEnabled) for i in range(model.count())]
    assert enabled == [True, True, False]
    assert model.itemData(2, ROLE.ToolTipRole) == "cannot be read"
    assert model.currentText() == "tiny-sd15" and docker.prompt.text.toPlainText() == "a fox"
    # Folded on a first start: what a first picture does not need; the artist's choice outlives Krita.
    opened = {s.name: s.toggle.isChecked() for s in (docker.server, docker.prompt, docker.advanced, docker.regions,
                                                     docker.results)}
    assert opened == {"server": False, "prompt": True, "advanced": False, "regions": False, "results": True}
    docker.regions.toggle.click()
    assert docker.regions.body.isVisibleTo(docker) and controller.preferences.read("open_sections") == (
        "prompt,results,regions")
    assert UnderpaintDocker(controller).regions.toggle.isChecked()
    scheduler = docker.advanced.scheduler
    assert [scheduler.itemData(i) for i in range(scheduler.count())] == WELCOME.schedulers
    assert scheduler.currentData() == "dpmpp_2m"
    assert docker.generation.batch.maximum() == WELCOME.limits.max_batch
    fill = docker.generation.fill_mode
    assert [(fill.itemText(i), fill.itemData(i, ROLE.ToolTipRole)) for i in range(fill.count())] == list(
        FILL_MODES.values())
    assert fill.currentData() == "auto"

    assert not docker.advanced.body.isVisibleTo(docker)
    docker.advanced.toggle.setChecked(True)
    assert docker.advanced.body.isVisibleTo(docker)
    assert docker.advanced.toggle.arrowType() == QtCore.Qt.ArrowType.DownArrow

    # The Generate button names what it will do.
    labels = []
    for strength, selection in ((100, None), (50, None), (50, Rect(8, 8, 10, 10)), (100, Rect(8, 8, 10, 10))):
        document.selection = None if selection is None else box_mask(64, 48, selection)
        docker.generation.strength.setValue(strength)
        docker.refresh()
        labels.append((docker.generation.strength_label.text(), docker.job.generate.text()))
    assert labels == [("Strength 100%", "Generate"), ("Strength 50%", "Refine"), ("Strength 50%", "Refine selection"),
                      ("Strength 100%", "Inpaint selection")]
    assert not docker.generation.seed.isEnabled()
    docker.generation.fixed_seed.setChecked(True)
    assert docker.generation.seed.isEnabled()
    not_started = UnderpaintDocker(None)
    assert not_started.widget().text() == NOT_STARTED


def check_the_docker_drives_a_job_from_generate_to_apply() -> None:
    controller, connection, _, document = connected_controller(FakeDocument(64, 48), "")
    docker = UnderpaintDocker(controller)
    docker.prompt.text.setPlainText("a blue bird")
    docker.advanced.steps.setValue(3)
    docker.generation.fixed_seed.setChecked(True)
    docker.generation.seed.setText("4000000000")  # beyond 32 bits, as seeds from the server often are
    docker.generation.batch.setValue(2)
    docker.job.generate.click()
    (request,) = connection.sent
    assert (request.prompt, request.steps, request.seed, request.batch_size, request.model) == (
        "a blue bird", 3, 4000000000, 2, "tiny-sd15")
    progress = docker.job.progress
    assert progress.isVisibleTo(docker) and progress.format() == "Waiting" and docker.job.cancel.isEnabled()

    connection.reply(Queued(id=request.id, position=1))
    controller.poll()
    assert progress.format() == "Queued, 1 ahead"
    forming = Image(width=32, height=24, format="rgba8", data=solid(32, 24, (10, 20, 30, 255)))
    connection.reply(Progress(id=request.id, step=1, total=3, preview=forming))
    controller.poll()
    assert (progress.format(), progress.value(), progress.maximum()) == ("Step 1 of 3", 1, 3)
    pixmap = docker.job.step_preview.pixmap()
    assert docker.job.step_preview.isVisibleTo(docker) and (pixmap.width(), pixmap.height()) == (192, 144)

    pictures = [Image(width=64, height=48, format="rgba8", data=solid(64, 48, colour))
                for colour in ((255, 0, 0, 255), (0, 255, 0, 255))]
    connection.reply(Result(id=request.id, images=[ResultImage(p, 7 + i) for i, p in enumerate(pictures)], info={},
                            elapsed=1.0))
    controller.poll()
    thumbnails = docker.results.thumbnails
    assert [thumbnails.item(i).text() for i in range(thumbnails.count())] == ["7", "8"]
    assert not progress.isVisibleTo(docker) and not docker.job.cancel.isEnabled()
    icon = thumbnails.item(0).icon().pixmap(96, 96).toImage()
    assert icon.pixelColor(48, 40).getRgb() == (255, 0, 0, 255)  # red, as the result: no channel swap

    thumbnails.itemClicked.emit(thumbnails.item(1))
    assert document.preview[1].data == pictures[1].data and thumbnails.item(1).isSelected()
    docker.results.apply.click()
    assert document.layers[-1][0] == "[Generated] a blue bird (8)"
    assert "[Generated] a blue bird (8)" in docker.job.message.text()
    thumbnails.setCurrentRow(0)
    docker.results.discard.click()
    assert [thumbnails.item(i).text() for i in range(thumbnails.count())] == ["8"]

    docker.job.live.click()
    assert controller.session().live is not None and docker.job.live.isChecked()
    docker.job.live.click()
    assert isinstance(connection.sent[-1], LiveStop) and not docker.job.live.isChecked()

    fill = docker.generation.fill_mode
    fill.setCurrentIndex(fill.findData("remove"))
    assert controller.settings.fill == "remove" and controller.preferences.read("fill") == "remove"
    docker.server.url.setText("ws://127.0.0.1:9999")
    docker.server.connect_button.click()
    assert connection.url == "ws://127.0.0.1:9999" and controller.preferences.read("server_url") == connection.url


def check_live_on_is_unmistakable() -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(64, 48), "a fox")
    docker = UnderpaintDocker(controller)
    live = docker.job.live
    off_icon = live.icon().pixmap(12, 12).toImage()
    assert (live.text(), live.isChecked(), docker.job.live_status.isVisibleTo(docker)) == ("Live", False, False)
    live.click()
    assert controller.session().live is not None
    assert (live.text(), live.isChecked(), docker.job.live_status.isVisibleTo(docker)) == ("Live on", True, True)
    assert docker.job.live_status.text() == "Live: following your strokes"
    assert live.icon().pixmap(12, 12).toImage() != off_icon  # a filled dot, not the hollow one
    assert "QToolButton:checked" in live.styleSheet() and LIVE_COLOUR in live.styleSheet()
    live.click()
    assert isinstance(connection.sent[-1], LiveStop) and not docker.job.live_status.isVisibleTo(docker)


def check_the_docker_fits_a_narrow_column() -> None:
    """At the narrowest width it is made for, every section open, Live on and a long message: nothing
    cut off, no horizontal scrollbar (tests/krita/docker_layout.py; the GUI Krita test checks it
    where Krita docks it)."""
    controller, _, _, _ = connected_controller(FakeDocument(64, 48), "a fox")
    docker = UnderpaintDocker(controller)
    for section in (docker.server, docker.advanced, docker.regions, docker.controls, docker.references):
        section.toggle.setChecked(True)
    docker.job.live.click()
    controller.server.message = "Cannot reach the server at 127.0.0.1:9860. Is it running? Retrying in 10 s."
    controller.session().message = "The server stopped while generating; it is running again. Generate again."
    docker.refresh()
    docker.resize(MIN_WIDTH + 40, 900)  # the scroll area's frame and scrollbar, the docker's own frame
    docker.show()
    _pump(lambda: False, 0.2)
    found = docker_layout.problems(docker)
    assert found["problems"] == [], found
    assert docker.widget().viewport().width() >= MIN_WIDTH, found
    docker.close()


def check_the_models_recommendations_fill_what_the_artist_did_not_change() -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(64, 48), "a fox")
    recommending = replace(WELCOME, models=[
        ModelInfo(name="painterly", kind="checkpoint", family="sd15", defaults=ModelDefaults(4.5, 28, "euler")),
        ModelInfo(name="plain", kind="checkpoint", family="sd15", defaults=ModelDefaults(7.0, 20, "dpmpp_2m"))],
        schedulers=["euler", "dpmpp_2m"])
    connection.reply(Connected(recommending))
    controller.poll()
    docker = UnderpaintDocker(controller)
    advanced, model = docker.advanced, docker.prompt.model

    def shown() -> tuple:
        return advanced.steps.value(), advanced.cfg.value(), advanced.scheduler.currentData()

    assert model.currentData() == "painterly" and shown() == (28, 4.5, "euler")
    assert advanced.origin.text() == "As the model recommends: steps, CFG scale, sampler."
    advanced.steps.setValue(12)  # the artist's own
    model.setCurrentIndex(model.findData("plain"))
    assert shown() == (12, 7.0, "dpmpp_2m")
    assert advanced.origin.text() == "Chosen: steps. As the model recommends: CFG scale, sampler."
    docker.job.generate.click()
    assert (connection.sent[-1].steps, connection.sent[-1].cfg_scale) == (12, 7.0)
    advanced.reset.click()
    assert shown() == (20, 7.0, "dpmpp_2m") and not advanced.reset.isEnabled()


def check_styles_are_chosen_saved_edited_and_deleted_from_the_docker() -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(64, 48), "a fox",
                                                        styles=StyleLibrary(Path(tempfile.mkdtemp()) / "styles"))
    docker = UnderpaintDocker(controller)
    picker = docker.styles.picker
    assert [picker.itemText(i) for i in range(picker.count())] == ["No style", "Concept art", "Ink drawing",
                                                                   "Oil painting", "Watercolour"]
    assert picker.itemData(3, ROLE.ToolTipRole).startswith("Prompt: {prompt}, oil painting")
    picker.setCurrentIndex(3)
    picker.activated.emit(3)  # as when the artist picks it
    docker.job.generate.click()
    assert connection.sent[-1].prompt == "a fox, oil painting, visible brush strokes, rich colours"

    docker.advanced.steps.setValue(9)
    docker.styles.save_action.trigger()
    dialog = docker.styles.dialog
    assert dialog.name.text() == "Oil painting (mine)" and dialog.steps.value() == 9
    dialog.name.setText("Thick oils")
    dialog.prompt.setPlainText("{prompt}, impasto")
    dialog.loras.setText("tiny-sd15-lora:0.5")
    dialog.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Save).click()
    assert picker.currentText() == "Thick oils" and controller.choices.style.name == "Thick oils"
    docker.job.generate.click()
    assert (connection.sent[-1].prompt, connection.sent[-1].steps) == ("a fox, impasto <lora:tiny-sd15-lora:0.5>", 9)

    docker.styles.edit_action.trigger()
    docker.styles.dialog.name.setText("Impasto")
    docker.styles.dialog.accept()
    assert [picker.itemText(i) for i in range(picker.count())] == ["No style", "Concept art", "Impasto",
                                                                   "Ink drawing", "Oil painting", "Watercolour"]
    assert picker.currentText() == "Impasto"

    docker.styles.delete_action.trigger()
    confirm = docker.styles.confirm
    confirm.button(QtWidgets.QMessageBox.StandardButton.Yes).click()
    assert "Impasto" not in controller.choices.library.names() and picker.currentText() == "No style"


def check_loras_and_recent_prompts_go_into_the_prompt_box() -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(64, 48), "")
    connection.reply(Connected(replace(WELCOME, models=[*WELCOME.models, ModelInfo(
        name="knife", kind="lora", family="sd15", trigger_words=["impasto"]), ModelInfo(
        name="xl-only", kind="lora", family="sdxl")])))
    controller.poll()
    docker = UnderpaintDocker(controller)
    prompt = docker.prompt
    menu = prompt.networks.menu()
    menu.aboutToShow.emit()
    actions = {a.text(): a for a in menu.actions() if a.text() and not a.isSeparator()}
    assert "knife · SD1.5 · impasto" in actions and not any("xl-only" in text for text in actions)
    prompt.text.setPlainText("a fox")
    cursor = prompt.text.textCursor()
    cursor.setPosition(5)
    prompt.text.setTextCursor(cursor)
    actions["knife · SD1.5 · impasto"].trigger()
    assert prompt.text.toPlainText() == controller.settings.prompt == "a fox <lora:knife:0.8>"

    for text in ("a cat", "a dog"):
        prompt.text.setPlainText(text)
        docker.job.generate.click()
    prompt.text.setPlainText("something new")
    key = QtGui.QKeyEvent(QtCore.QEvent.Type.KeyPress, QtCore.Qt.Key.Key_Up, QtCore.Qt.KeyboardModifier.ControlModifier)
    QtWidgets.QApplication.sendEvent(prompt.text, key)
    assert prompt.text.toPlainText() == "a dog"
    QtWidgets.QApplication.sendEvent(prompt.text, key)
    assert prompt.text.toPlainText() == "a cat"
    recent = prompt.recent.menu()
    recent.aboutToShow.emit()
    assert [a.text() for a in recent.actions()] == ["a dog", "a cat"]
    recent.actions()[0].trigger()
    assert controller.settings.prompt == "a dog"


def check_the_docker_lists_and_removes_regions() -> None:
    controller, _, _, document = connected_controller(FakeDocument(64, 48), "a meadow")
    document.alphas = {"sky-id": ("Sky", box_mask(64, 48, Rect(0, 0, 64, 10)))}
    document.active_layer = "sky-id"
    docker = UnderpaintDocker(controller)
    controller.add_region("a stormy sky")
    regions = docker.regions.layer_list
    assert [regions.item(i).text() for i in range(regions.count())] == ["Sky: a stormy sky"]
    assert regions.item(0).data(ROLE.UserRole) == "sky-id"
    regions.setCurrentRow(0)
    docker.regions.remove.click()
    assert regions.count() == 0 and controller.regions() == []


def check_the_docker_adds_edits_and_removes_control_layers() -> None:
    controller, connection, _, document = connected_controller(FakeDocument(64, 48), "a castle")
    document.rgbas = {"sketch-id": ("Sketch", solid(64, 48, (0, 0, 0, 255))),
                      "depth-id": ("Depth", solid(64, 48, (90, 90, 90, 255)))}
    docker = UnderpaintDocker(controller)
    section = docker.controls
    assert not section.strength.isEnabled()  # nothing selected: only the kind to add with
    document.active_layer = "sketch-id"
    section.add.click()
    section.kind.setCurrentIndex(section.kind.findData("depth"))
    document.active_layer = "depth-id"
    section.add.click()
    rows = section.layer_list
    assert [rows.item(i).text() for i in range(rows.count())] == ["Sketch: Scribble", "Depth: Depth"]
    rows.setCurrentRow(0)
    assert section.kind.currentData() == "scribble" and section.strength.isEnabled()
    section.strength.setValue(0.75)
    section.end.setValue(60)
    section.kind.setCurrentIndex(section.kind.findData("lineart"))
    assert [(c.kind, c.strength, c.start, c.end) for c, _ in controller.controls()] == [
        ("lineart", 0.75, 0.0, 0.6), ("depth", 1.0, 0.0, 1.0)]
    assert rows.item(0).text() == "Sketch: Line art" and rows.currentRow() == 0  # the selection survives
    section.start.setValue(80)  # after the end: refused, told, and the box shows the kept value again
    assert "cannot be used" in controller.message and section.start.value() == 0
    controller.generate()
    assert [c.kind for c in connection.sent[-1].control] == ["lineart", "depth"]
    section.remove.click()
    assert [c.layer_id for c, _ in controller.controls()] == ["depth-id"] and rows.count() == 1


def check_from_canvas_makes_a_control_layer_and_shows_it_is_busy() -> None:
    controller, connection, _, document = connected_controller(FakeDocument(64, 48), "a castle")
    docker = UnderpaintDocker(controller)
    section = docker.controls
    made = section.made_kind
    assert [made.itemData(i) for i in range(made.count())] == list(PREPROCESS_KINDS)
    assert made.currentData() == "scribble" and section.from_canvas.text() == "From canvas"
    made.setCurrentIndex(made.findData("canny"))
    section.from_canvas.click()
    (request,) = connection.sent
    assert isinstance(request, Preprocess) and request.kind == "canny" and request.image.bounds == (0, 0, 64, 48)
    # Busy until the answer is in: the button says so, the progress bar too, and ✕ cancels it.
    assert (section.from_canvas.text(), section.from_canvas.isEnabled()) == ("Making…", False)
    assert docker.job.progress.format() == "Making a control image" and docker.job.cancel.isEnabled()
    lines = Image(width=64, height=48, format="rgba8", data=solid(64, 48, (255, 255, 255, 255)))
    connection.reply(Result(id=request.id, images=[ResultImage(image=lines, seed=0)], info={}, elapsed=0.1))
    controller.poll()
    assert (section.from_canvas.text(), section.from_canvas.isEnabled()) == ("From canvas", True)
    assert not docker.job.progress.isVisibleTo(docker)
    rows = section.layer_list
    assert [rows.item(i).text() for i in range(rows.count())] == ["[Control] canny: Canny edges"]
    assert document.layers == [("[Control] canny", lines)]
    assert docker.job.message.text() == controller.message and "“[Control] canny”" in controller.message


def check_a_hidden_layer_is_added_with_the_artists_layer_kept_active() -> None:
    """Krita makes a layer added by a script the active one a moment later (played here by hand): the
    artist's layer is made active again, so the next stroke does not go to the hidden control layer."""
    document = Krita.instance().createDocument(16, 8, "control", "RGBA", "U8", SRGB_PROFILE, 72.0)
    artist = document.rootNode().childNodes()[0]
    document.setActiveNode(artist)
    glue = KritaDocument(document)
    lines = Image(width=4, height=3, format="rgba8", x=2, y=4, data=_rgba(4, 3))
    layer_id = glue.add_hidden_layer("[Control] canny", lines)
    layers = document.rootNode().childNodes()
    assert [n.name() for n in layers] == ["Background", "[Control] canny"]
    layer = layers[1]
    assert layer.uniqueId().toString() == layer_id and glue.layer_name(layer_id) == "[Control] canny"
    assert not layer.visible() and glue.read_layer_rgba(layer_id, Rect(2, 4, 4, 3)) == lines.data
    document.setActiveNode(layer)
    assert _pump(lambda: document.activeNode() is artist, 1.0)


def check_the_docker_adds_edits_and_removes_reference_pictures_with_thumbnails() -> None:
    controller, connection, _, document = connected_controller(FakeDocument(64, 48), "a garden")
    document.rgbas = {"photo-id": ("Photo", solid(64, 48, (200, 30, 30, 255)))}
    oak = Image(width=30, height=20, format="rgba8", data=solid(30, 20, (0, 90, 0, 255)))
    document.files["/pictures/oak.png"] = oak
    docker = UnderpaintDocker(controller)
    section = docker.references
    assert section.mode.currentData() == "reference" and not section.strength.isEnabled()
    document.active_layer = "photo-id"
    section.add.click()
    section.mode.setCurrentIndex(section.mode.findData("style"))
    chosen = QtWidgets.QFileDialog.getOpenFileName
    QtWidgets.QFileDialog.getOpenFileName = staticmethod(lambda *args: ("/pictures/oak.png", ""))
    try:
        section.add_image.click()
    finally:
        QtWidgets.QFileDialog.getOpenFileName = chosen
    rows = section.layer_list
    assert [rows.item(i).text() for i in range(rows.count())] == ["Photo: Whole picture", "[Reference] oak.png: Style"]
    assert all(not rows.item(i).icon().isNull() for i in range(rows.count()))  # each with its thumbnail
    rows.setCurrentRow(0)
    assert section.mode.currentData() == "reference" and section.strength.value() == 0.6
    section.strength.setValue(0.35)
    section.start.setValue(10)
    section.mode.setCurrentIndex(section.mode.findData("composition"))
    assert [(r.mode, r.strength, r.start, r.end) for r, _ in controller.references()] == [
        ("composition", 0.35, 0.1, 1.0), ("style", 0.6, 0.0, 1.0)]
    assert rows.item(0).text() == "Photo: Composition" and rows.currentRow() == 0
    section.strength.setValue(section.strength.maximum() + 1)  # held at the protocol's bound
    assert section.strength.value() == 1.0
    controller.generate()
    assert [(r.mode, r.image.width) for r in connection.sent[-1].reference] == [("composition", 64), ("style", 30)]
    section.remove.click()
    assert [name for _, name in controller.references()] == ["[Reference] oak.png"] and rows.count() == 1


def check_qimages_round_trip_straight_rgba() -> None:
    data = _rgba(5, 3)
    image = from_image(Image(width=5, height=3, format="rgba8", data=data))
    assert (image.width(), image.height()) == (5, 3)
    assert rgba_bytes(image) == data and pixel_bytes(image) == data
    assert image.pixelColor(1, 0).getRgb() == tuple(data[4:8])
    argb = QtGui.QImage(2, 1, QtGui.QImage.Format.Format_ARGB32)
    argb.setPixelColor(0, 0, QtGui.QColor(255, 0, 0, 255))
    argb.setPixelColor(1, 0, QtGui.QColor(0, 0, 255, 128))
    assert rgba_bytes(argb) == bytes([255, 0, 0, 255, 0, 0, 255, 128])


def check_the_krita_document_glue_converts_both_ways() -> None:
    """BGRA layers and RGBA requests, read and written through pixelData/setPixelData (bytes and
    QByteArray) and, for documents that are not 8-bit sRGB, through Krita's QImage projection."""
    for depth, profile in (("U8", SRGB_PROFILE), ("U16", "sRGB-elle-V2-g10.icc")):
        document = Krita.instance().createDocument(16, 8, depth, "RGBA", depth, profile, 72.0)
        background = document.rootNode().childNodes()[0]
        background.setPixelData(RED_BGRA * 128, 0, 0, 16, 8)
        glue = KritaDocument(document)
        assert glue.read_pixels(Rect(1, 1, 2, 1)) == bytes([255, 0, 0, 255]) * 2, depth

        picture = Image(width=4, height=3, format="rgba8", x=2, y=4, data=_rgba(4, 3))
        glue.add_result_layer("[Generated] picture (1)", picture)
        layer = next(n for n in document.rootNode().childNodes() if n.name() == "[Generated] picture (1)")
        bgra = bytearray(picture.data)
        bgra[0::4], bgra[2::4] = picture.data[2::4], picture.data[0::4]
        assert bytes(layer.pixelData(2, 4, 4, 3)) == bgra, depth
        assert glue.read_pixels(Rect(2, 4, 4, 3)) == picture.data, depth  # and RGBA out again

        glue.show_preview("[Preview] white", Image(width=16, height=8, format="rgba8", data=bytes([255]) * 512))
        preview = document.rootNode().childNodes()[-1]
        assert (preview.name(), preview.locked(), preview.visible()) == ("[Preview] white", True, True)
        assert glue.read_pixels(Rect(0, 0, 1, 1)) == bytes([255, 0, 0, 255])  # read without the preview
        glue.hide_preview()
        assert not preview.visible()

    document.setActiveNode(background)  # the quick token hashes the active layer's QImage thumbnail
    before = glue.quick_change_token()
    background.setPixelData(bytes([0, 255, 0, 255]) * 9, 6, 3, 3, 3)
    assert glue.quick_change_token() != before

    region = document.createNode("sky", "paintlayer")
    document.rootNode().addChildNode(region, None)
    region.setPixelData(bytes([255, 0, 0, 128]) * 4, 4, 0, 4, 1)
    region_id = region.uniqueId().toString()
    assert glue.layer_name(region_id) == "sky"
    assert glue.read_layer_alpha(region_id, Rect(3, 0, 3, 1)) == bytes([0, 128, 128])
    assert glue.read_layer_rgba(region_id, Rect(3, 0, 2, 1)) == bytes([0, 0, 0, 0, 0, 0, 255, 128])  # BGRA in

    glue.save_history(b"history\x00blob")
    glue.save_list("regions", b'{"regions": []}')
    glue.save_list("controls", b'{"controls": []}')
    assert glue.load_history() == b"history\x00blob" and glue.load_list("regions") == b'{"regions": []}'
    assert glue.load_list("controls") == b'{"controls": []}'


def check_the_krita_document_glue_reads_and_imports_reference_pictures() -> None:
    """A layer's whole picture over its own bounds, RGBA out of BGRA; a picture file in a new hidden
    layer above the active one; thumbnails; the references annotation."""
    document = Krita.instance().createDocument(40, 30, "refs", "RGBA", "U8", SRGB_PROFILE, 72.0)
    root = document.rootNode()
    glue = KritaDocument(document)
    photo = document.createNode("Photo", "paintlayer")
    root.addChildNode(photo, root.childNodes()[0])
    photo.setPixelData(RED_BGRA * 12, 5, 7, 4, 3)
    photo_id = photo.uniqueId().toString()
    picture = glue.read_layer_picture(photo_id, 1024)
    assert (picture.width, picture.height, picture.x, picture.y) == (4, 3, 0, 0)
    assert picture.data == bytes([255, 0, 0, 255]) * 12
    shrunk_picture = glue.read_layer_picture(photo_id, 2)
    assert (shrunk_picture.width, shrunk_picture.height) == (2, 2)  # 4x3 within 2 a side: 2x1.5, rounded
    assert glue.read_layer_picture("gone", 1024) is None
    empty = document.createNode("Empty", "paintlayer")
    root.addChildNode(empty, photo)
    assert glue.read_layer_picture(empty.uniqueId().toString(), 1024) is None

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "oak.png")
        from_image(Image(width=6, height=5, format="rgba8", data=_rgba(6, 5))).save(path)
        document.setActiveNode(photo)
        layer_id = glue.add_picture_layer(path, "[Reference] oak.png")
        (Path(folder) / "notes.txt").write_text("not a picture")
        assert glue.add_picture_layer(str(Path(folder) / "notes.txt"), "[Reference] notes.txt") is None
    names = [n.name() for n in root.childNodes()]
    assert names == ["Background", "Photo", "[Reference] oak.png", "Empty"]  # right above the active layer
    layer = root.childNodes()[2]
    assert layer.uniqueId().toString() == layer_id and not layer.visible()
    assert glue.read_layer_picture(layer_id, 1024).data == _rgba(6, 5)
    thumbnail = glue.layer_thumbnail(layer_id, 16)
    assert (thumbnail.width, thumbnail.height) == (16, 12) and glue.layer_thumbnail("gone", 16) is None
    glue.save_list("references", b'{"references": []}')
    assert glue.load_list("references") == b'{"references": []}'


def _training_docker() -> tuple[Controller, ScriptedConnection, UnderpaintDocker]:
    """A docker over a controller of the (stand-in) Krita's documents, its scripted server welcomed."""
    connection = ScriptedConnection()
    controller = Controller(connection, KritaWorkspace())
    connection.reply(Connected(WELCOME))
    controller.poll()
    return controller, connection, UnderpaintDocker(controller)


def _painted_document(name: str):
    """A 64x48 document: a red "Paint" layer, a hidden "Hidden" one and an empty "Top" over a white background."""
    document = Krita.instance().createDocument(64, 48, name, "RGBA", "U8", SRGB_PROFILE, 72.0)
    root = document.rootNode()
    root.childNodes()[0].setPixelData(bytes([255, 255, 255, 255]) * 64 * 48, 0, 0, 64, 48)
    for layer_name, visible, painted in (("Paint", True, True), ("Hidden", False, True), ("Top", True, False)):
        layer = document.createNode(layer_name, "paintlayer")
        if painted:
            layer.setPixelData(RED_BGRA * 20 * 10, 10, 10, 20, 10)
        layer.setVisible(visible)
        root.addChildNode(layer, root.childNodes()[-1])
    return document


def check_the_train_dialog_gathers_pictures_and_captions_into_a_train_request() -> None:
    controller, connection, docker = _training_docker()
    _painted_document("cats")
    menu = docker.prompt.networks.menu()
    menu.aboutToShow.emit()
    (train,) = [action for action in menu.actions() if action.text() == "Train…"]  # the LoRA menu's last entry
    assert menu.actions()[-1] is train
    train.trigger()
    dialog = docker.prompt.train_dialog
    assert dialog.isVisible() and docker.prompt.open_training() is dialog  # one dialog, opened again
    dialog.add_layers.click()
    assert [row.picture.label for row in dialog.rows()] == ["Background", "Paint"]  # visible, with pixels
    paint = dialog.rows()[1].picture.image
    assert (paint.width, paint.height) == (64, 48)  # as large as the canvas, which fits the training area
    assert paint.data[(15 * 64 + 15) * 4:(15 * 64 + 16) * 4] == bytes([255, 0, 0, 255])  # RGBA, not BGRA
    assert paint.data[:4] == bytes(4)  # the layer's own transparency
    dialog.add_documents.click()
    assert dialog.pictures.count() == 2 + len(Krita.instance().documents())
    assert dialog.rows()[-1].picture.label == "cats"
    dialog.pictures.setCurrentRow(2)
    for row in range(2, dialog.pictures.count()):
        dialog.pictures.item(row).setSelected(True)
    dialog.remove.click()
    assert dialog.pictures.count() == 2

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "big.png").write_bytes(encode_png(bytes([0, 0, 255, 255]) * 1024 * 768, 1024, 768))
        Path(folder, "big.txt").write_text("a blue\nwall ")
        Path(folder, "notes.txt").write_text("not a picture")
        Path(folder, "broken.png").write_bytes(b"not a png")
        dialog.add_folder_pictures(folder)
    big = dialog.rows()[-1]
    assert dialog.pictures.count() == 3 and big.picture.label == "big.png"
    assert (big.picture.image.width, big.picture.image.height) == (591, 443)  # shrunk to 512² pixels, not sent whole
    assert big.caption.text() == "a blue wall"

    dialog.start.click()
    assert "trigger word" in dialog.status.text() and not connection.sent  # what to fix, nothing sent
    dialog.rows()[1].caption.setText("a red box")
    dialog.trigger.setText("redbox")
    dialog.subject.setCurrentIndex(dialog.subject.findData("concept"))
    assert dialog.steps.text() == "Server's choice"
    dialog.steps.setValue(8)
    dialog.start.click()
    (request,) = connection.sent
    assert isinstance(request, Train)
    assert (request.kind, request.model, request.trigger, request.name, request.steps) == (
        "embedding", "tiny-sd15", "redbox", "redbox", 8)
    assert [(i.image.width, i.image.height, i.caption) for i in request.images] == [
        (64, 48, None), (64, 48, "a red box"), (591, 443, "a blue wall")]
    assert not dialog.start.isEnabled() and dialog.cancel.isEnabled() and not dialog.add_layers.isEnabled()
    dialog.cancel.click()
    assert connection.cancelled == [request.id]
    connection.reply(Cancelled(id=request.id))
    controller.poll()
    assert dialog.status.text() == "Training cancelled." and dialog.start.isEnabled()
    dialog.deleteLater()
    docker.deleteLater()


def check_the_train_dialog_shows_progress_the_loss_curve_and_the_new_lora_in_the_picker() -> None:
    controller, connection, docker = _training_docker()
    _painted_document("progress")
    dialog = docker.prompt.open_training()
    dialog.add_layers.click()
    dialog.trigger.setText("redbox")
    dialog.steps.setValue(4)
    assert not dialog.progress.isVisible() and not dialog.curve.isVisible()
    dialog.start.click()
    (request,) = connection.sent
    sample = Image(width=8, height=8, format="png", data=encode_png(bytes([0, 255, 0, 255]) * 64, 8, 8))
    connection.reply(Queued(id=request.id, position=1))
    controller.poll()
    assert dialog.status.text() == "Queued: 1 job before it." and dialog.progress.isVisible()
    for step, loss in ((1, 0.9), (2, 0.5), (3, 0.6)):
        connection.reply(Progress(id=request.id, step=step, total=4, loss=loss, preview=sample if step == 2 else None))
    controller.poll()
    assert (dialog.progress.value(), dialog.progress.maximum()) == (3, 4)
    assert dialog.status.text() == "Training: step 3 of 4 · loss 0.6000"
    assert dialog.curve.points == [(1, 0.9), (2, 0.5), (3, 0.6)] and dialog.curve.total == 4
    shown = dialog.sample.pixmap().toImage()
    assert not shown.isNull() and shown.pixelColor(shown.width() // 2, shown.height() // 2).getRgb() == (0, 255, 0, 255)
    dialog.curve.resize(200, 80)
    drawn = dialog.curve.grab().toImage()
    line = [(x, y) for x in range(drawn.width()) for y in range(drawn.height())
            if drawn.pixelColor(x, y).blue() > 200 and drawn.pixelColor(x, y).red() < 120]
    assert line, "no loss curve drawn"
    assert min(x for x, _ in line) < 60 and max(x for x, _ in line) > 120  # from step 1 to step 3 of 4

    connection.reply(Result(id=request.id, images=[], info={}, elapsed=2.0, name="redbox", file="redbox.safetensors"))
    controller.poll()
    assert isinstance(connection.sent[-1], ListModels)
    assert "“redbox” is in the LoRA menu" in dialog.status.text() and dialog.progress.value() == 4
    connection.reply(ModelList(models=[*WELCOME.models, ModelInfo(name="redbox", kind="lora", family="sd15",
                                                                   trigger_words=["redbox"])]))
    controller.poll()
    menu = docker.prompt.networks.menu()
    menu.aboutToShow.emit()
    assert "redbox · SD1.5 · redbox" in [action.text() for action in menu.actions()]
    dialog.deleteLater()
    docker.deleteLater()


def check_a_large_layer_is_shrunk_a_band_at_a_time_like_a_whole_picture() -> None:
    """What a band-wise shrink gives is the whole picture's shrink, within a level or two of rounding
    at the bands' edges, while no read is larger than the band budget."""
    width, height = 300, 200
    rgba = bytes(v for y in range(height) for x in range(width)
                 for v in (x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height),
                           255 if x < 250 else 0))
    bgra = bytearray(rgba)
    bgra[0::4], bgra[2::4] = rgba[2::4], rgba[0::4]
    reads = []

    def read(y: int, rows: int) -> QtGui.QImage:
        reads.append(rows)
        return from_bgra(bytes(bgra[y * width * 4:(y + rows) * width * 4]), width, rows)

    banded = shrunk_in_bands(read, width, height, 100, band_bytes=width * 4 * 30)
    whole = shrunk(from_image(Image(width=width, height=height, format="rgba8", data=rgba)), 100)
    assert (banded.width, banded.height) == (whole.width, whole.height) == (122, 81)
    assert max(reads) == 30 and sum(reads) == height
    opaque = [i for i in range(0, len(whole.data), 4) if whole.data[i + 3] == banded.data[i + 3] == 255]
    assert len(opaque) > 0.7 * banded.width * banded.height
    difference = [abs(banded.data[i + c] - whole.data[i + c]) for i in opaque for c in range(3)]
    assert sum(difference) / len(difference) < 1.0 and max(difference) <= 4, (sum(difference), max(difference))
    alpha = [abs(a - b) for a, b in zip(banded.data[3::4], whole.data[3::4], strict=True)]
    assert sum(alpha) / len(alpha) < 1.0
    width = 40
    same = shrunk_in_bands(read, 40, 30, 100)  # fits: as it is
    assert (same.width, same.height) == (40, 30) and same.data == bytes(rgba[:40 * 30 * 4])
