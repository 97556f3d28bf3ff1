"""Scenarios run inside real Krita; tests/test_plugin_krita.py runs them and asserts on their findings.

`kritarunner -s scenarios -f <name>` calls a scenario with PYTHONPATH naming this folder; the GUI
test driver (underpaint_test_driver) calls them the same way once Krita's window is up. They stay in
one module, longer than ~400 lines, because both name a scenario as a function of this module.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
import zlib
from collections.abc import Callable

from harness import extension, fingerprint, layer_names, new_document, pump, report
from krita import Krita, Selection
from PyQt5.QtCore import QPoint, Qt
from PyQt5.QtGui import QImage
from PyQt5.QtWidgets import QAbstractButton, QApplication, QWidget

RED_BGRA = bytes([0, 0, 255, 255])
STROKE_LEAD = 0.2  # seconds from starting xdotool to its press


def _fill(node, width: int, height: int, bgra: bytes, x: int = 0, y: int = 0) -> None:
    node.setPixelData(bgra * (width * height), x, y, width, height)


def _node(document, name: str):
    return next((n for n in document.rootNode().childNodes() if n.name() == name), None)


def _projection_rgba(document, x: int, y: int) -> list[int]:
    image = document.projection(x, y, 1, 1).convertToFormat(QImage.Format_RGBA8888)
    bits = image.constBits()
    bits.setsize(4)
    return list(bytes(bits))


@report
def document_glue(job: dict, out: dict) -> None:
    """The Krita wrapper alone (no server): channel order both ways, preview, selection, layers, .kra."""
    extension(job)
    import sys

    import msgpack
    import websockets.sync.client  # noqa: F401  (what the connection imports when it connects)
    from underpaint_krita.document import KritaDocument

    out["modules"] = {name: sys.modules[name].__file__ for name in ("shared", "msgpack", "websockets")}
    out["msgpack_packer"] = msgpack.Packer.__module__

    from shared.crop import Rect
    from shared.messages import Image

    document = new_document(64, 48)
    background = document.rootNode().childNodes()[0]
    _fill(background, 64, 48, RED_BGRA)
    doc = KritaDocument(document)
    out["size"] = list(doc.size)
    out["read_red"] = list(doc.read_pixels(Rect(1, 2, 2, 1)))

    doc.add_result_layer("[Generated] green (1)", Image(width=2, height=2, format="rgba8", x=5, y=6,
                                                       data=bytes([0, 255, 0, 128]) * 4))
    layer = _node(document, "[Generated] green (1)")
    out["result_layer_bgra"] = list(bytes(layer.pixelData(5, 6, 1, 1)))
    bounds = layer.bounds()
    out["result_layer_bounds"] = [bounds.x(), bounds.y(), bounds.width(), bounds.height()]

    blue, white = bytes([0, 0, 255, 255]), bytes([255, 255, 255, 255])
    doc.show_preview("[Preview] first", Image(width=4, height=4, format="rgba8", data=blue * 16))
    doc.show_preview("[Preview] second", Image(width=2, height=2, format="rgba8", data=white * 4, x=10, y=10))
    preview = document.rootNode().childNodes()[-1]
    out["preview"] = {"name": preview.name(), "locked": preview.locked(), "visible": preview.visible(),
                      "old_pixel": list(bytes(preview.pixelData(0, 0, 1, 1))),
                      "new_pixel": list(bytes(preview.pixelData(10, 10, 1, 1))),
                      "projection": _projection_rgba(document, 10, 10),
                      "old_projection": _projection_rgba(document, 0, 0)}
    out["read_under_preview"] = list(doc.read_pixels(Rect(10, 10, 1, 1)))
    out["preview_visible_after_read"] = preview.visible()
    doc.hide_preview()
    out["preview_visible_after_hide"] = preview.visible()
    out["layers_before_insert"] = layer_names(document)

    selection = Selection()
    selection.select(3, 4, 5, 6, 255)
    document.setSelection(selection)
    bounds = doc.selection_bounds()
    out["selection_bounds"] = [bounds.x, bounds.y, bounds.width, bounds.height]
    out["selection_row"] = list(doc.read_selection(Rect(2, 4, 3, 1)))

    document.setActiveNode(background)
    active = document.activeNode()
    out["active_layer"] = active.name() if active is not None else None
    doc.add_result_layer("[Generated] above background (2)", Image(width=1, height=1, format="rgba8",
                                                                   data=bytes(4)))
    out["layers_after_insert"] = layer_names(document)

    deep = new_document(16, 16, "U16", "deep")
    # 16-bit BGRA, little-endian: red at full.
    _fill(deep.rootNode().childNodes()[0], 16, 16, bytes([0, 0, 0, 0, 255, 255, 255, 255]))
    deep_doc = KritaDocument(deep)
    out["deep_read_red"] = list(deep_doc.read_pixels(Rect(0, 0, 1, 1)))
    deep_doc.add_result_layer("[Generated] green (3)", Image(width=16, height=16, format="rgba8",
                                                             data=bytes([0, 255, 0, 255]) * 256))
    blue = bytes([0, 0, 255, 255]) * 256
    deep_doc.show_preview("[Preview] blue", Image(width=16, height=16, format="rgba8", data=blue))
    deep_doc.show_preview("[Preview] white", Image(width=4, height=4, format="rgba8", x=2, y=2,
                                                   data=bytes([255, 255, 255, 255]) * 16))
    out["deep_preview"] = [_projection_rgba(deep, 3, 3), _projection_rgba(deep, 12, 12)]
    deep_doc.hide_preview()
    deep_layer = _node(deep, "[Generated] green (3)")
    out["deep_layer_space"] = [deep_layer.colorModel(), deep_layer.colorDepth()]
    out["deep_projection"] = _projection_rgba(deep, 8, 8)

    grey = Krita.instance().createDocument(8, 8, "grey", "GRAYA", "U8", "", 72.0)
    _fill(grey.rootNode().childNodes()[0], 8, 8, bytes([200, 255]))  # grey level, alpha
    grey_doc = KritaDocument(grey)
    out["grey_read"] = list(grey_doc.read_pixels(Rect(0, 0, 1, 1)))
    grey_doc.add_result_layer("[Generated] white (4)", Image(width=8, height=8, format="rgba8",
                                                             data=bytes([255, 255, 255, 255]) * 64))
    out["grey_layer_space"] = _node(grey, "[Generated] white (4)").colorModel()

    # Regions: a layer's alpha read by its id; a half-covering, half-transparent layer.
    region = document.createNode("sky", "paintlayer")
    document.rootNode().addChildNode(region, None)
    _fill(region, 8, 2, bytes([255, 0, 0, 128]), x=4, y=4)
    region_id = region.uniqueId().toString()
    out["region_name"] = doc.layer_name(region_id)
    out["region_alpha"] = list(doc.read_layer_alpha(region_id, Rect(3, 4, 3, 1)))
    out["missing_region_alpha"] = doc.read_layer_alpha("{00000000-0000-0000-0000-000000000000}", Rect(0, 0, 1, 1))
    # Control images: a layer's own RGBA, in protocol order; a 16-bit layer read through a converted copy.
    out["control_rgba"] = list(doc.read_layer_rgba(region_id, Rect(3, 4, 2, 1)))
    deep_background = deep.rootNode().childNodes()[0]
    out["deep_control_rgba"] = list(deep_doc.read_layer_rgba(deep_background.uniqueId().toString(), Rect(0, 0, 1, 1)))
    out["deep_background_space"] = [deep_background.colorModel(), deep_background.colorDepth()]
    doc.save_list("regions", b'{"regions": "blob"}')

    doc.save_history(b"history\x00blob")
    path = job["workdir"] + "/glue.kra"
    document.setBatchmode(True)
    out["saved"] = document.saveAs(path)
    document.close()
    reopened = Krita.instance().openDocument(path)
    out["history_after_reopen"] = KritaDocument(reopened).load_history().decode("latin-1")
    out["regions_after_reopen"] = KritaDocument(reopened).load_list("regions").decode()
    out["region_alpha_after_reopen"] = list(KritaDocument(reopened).read_layer_alpha(region_id, Rect(3, 4, 3, 1)))
    out["fresh_history"] = KritaDocument(deep).load_history()


def _paint_scene(document) -> dict[str, str]:
    """A background, a red square on "Paint" and an empty "Top"; returns the layers' fingerprints."""
    width, height = document.width(), document.height()
    root = document.rootNode()
    background = root.childNodes()[0]
    background.setPixelData(bytes(b % 256 for b in range(width * height * 4)), 0, 0, width, height)
    paint = document.createNode("Paint", "paintlayer")
    _fill(paint, 60, 50, RED_BGRA, 30, 40)
    root.addChildNode(paint, background)
    top = document.createNode("Top", "paintlayer")
    root.addChildNode(top, paint)
    document.refreshProjection()
    document.waitForDone()
    return {n.name(): fingerprint(n, document) for n in (background, paint, top)}


def _untouched(document, artist: dict[str, str]) -> dict[str, bool]:
    return {name: fingerprint(_node(document, name), document) == value for name, value in artist.items()}


def _select(document, x: int, y: int, width: int, height: int) -> None:
    selection = Selection()
    selection.select(x, y, width, height, 255)
    document.setSelection(selection)


def _wait_for_jobs(controller, timeout: float = 120.0) -> bool:
    return pump(lambda: controller.session() is not None and not controller.session().jobs, timeout)


def _prepare(job: dict, out: dict):
    plugin = extension(job)
    controller = plugin.controller
    out["connected"] = pump(lambda: controller.server.connected, 60)
    out["models"] = controller.server.models
    return controller


@report
def inpaint_apply(job: dict, out: dict) -> None:
    """Paint, select, inpaint, apply: a new layer above the active one, transparent beyond the grown
    selection, the artist's layers untouched; the history survives saving the .kra."""
    controller = _prepare(job, out)
    from shared.crop import Rect, edge_defaults

    width, height = 256, 192
    document = new_document(width, height)
    root = document.rootNode()
    artist = _paint_scene(document)
    box = Rect(100, 80, 60, 40)
    _select(document, box.x, box.y, box.width, box.height)

    settings = controller.settings
    settings.model, settings.prompt, settings.steps, settings.seed = job["model"], "a blue bird", 3, 5
    settings.strength = 1.0
    job_id = controller.generate()
    out["job"] = job_id
    out["finished"] = _wait_for_jobs(controller)
    out["message"] = controller.message
    session = controller.session()
    out["results"] = [[e.id, e.seed, e.x, e.y, e.width, e.height] for e in session.history]
    preview = next((n for n in root.childNodes() if n.name().startswith("[Preview]")), None)
    out["preview"] = None if preview is None else [preview.name(), preview.locked(), preview.visible()]

    out["applied"] = controller.apply()
    names = layer_names(document)
    out["layers"] = names
    layer = _node(document, out["applied"])
    data = bytes(layer.pixelData(0, 0, width, height))
    reach = edge_defaults(box).reach
    grown = box.grown(reach)
    outside = inside = 0
    for y in range(height):
        row = data[y * width * 4:(y + 1) * width * 4]
        alpha = row[3::4]
        for x in range(width):
            if alpha[x]:
                if grown.x <= x < grown.right and grown.y <= y < grown.bottom:
                    inside += 1
                else:
                    outside += 1
    out["opaque_inside_grown_selection"] = inside
    out["opaque_outside_grown_selection"] = outside
    out["selection_pixels"] = box.width * box.height
    centre = bytes(layer.pixelData(box.x + box.width // 2, box.y + box.height // 2, 1, 1))
    out["centre_alpha"] = centre[3]
    out["artist_untouched"] = _untouched(document, artist)
    out["preview_visible_after_apply"] = None if preview is None else preview.visible()

    path = job["workdir"] + "/inpaint.kra"
    document.setBatchmode(True)
    out["saved"] = document.saveAs(path)
    document.close()
    reopened = Krita.instance().openDocument(path)
    out["reopened"] = reopened is not None and reopened.fileName() == path
    out["open_documents"] = [d.fileName() for d in Krita.instance().documents()]
    restored = controller.session()
    out["history_after_reopen"] = [[e.id, e.seed] for e in restored.history] if restored else None


@report
def refine_keeps_red(job: dict, out: dict) -> None:
    """A pure red area refined at very low strength comes back red, not blue (BGRA vs RGBA)."""
    controller = _prepare(job, out)
    width = height = 128
    document = new_document(width, height)
    _fill(document.rootNode().childNodes()[0], width, height, RED_BGRA)
    document.waitForDone()
    settings = controller.settings
    settings.model, settings.prompt, settings.seed = job["model"], "red", 1
    settings.strength, settings.steps = job.get("strength", 0.05), job.get("steps", 20)
    if job.get("select"):
        _select(document, *job["select"])
    controller.generate()
    out["finished"] = _wait_for_jobs(controller)
    out["message"] = controller.message
    out["applied"] = controller.apply()
    layer = _node(document, out["applied"])
    bounds = layer.bounds()
    data = bytes(layer.pixelData(bounds.x(), bounds.y(), bounds.width(), bounds.height()))
    opaque = [i for i in range(0, len(data), 4) if data[i + 3] == 255]
    out["pixels"] = len(opaque)
    # Krita's bytes are BGRA: index 2 is red, 0 is blue.
    out["mean_red"] = sum(data[i + 2] for i in opaque) / max(1, len(opaque))
    out["mean_blue"] = sum(data[i] for i in opaque) / max(1, len(opaque))
    out["mean_green"] = sum(data[i + 1] for i in opaque) / max(1, len(opaque))


@report
def control_layers(job: dict, out: dict) -> None:
    """A sketch layer made a control is kept in the .kra; reopened, an inpaint of a selection at odd
    offsets sends the sketch's pixels over the selection's context region, and the result arrives as
    a new layer."""
    controller = _prepare(job, out)
    from underpaint_krita.controls import ControlLayer

    from shared.images import swap_red_blue
    from shared.messages import Result

    width, height = 256, 192
    document = new_document(width, height)
    _fill(document.rootNode().childNodes()[0], width, height, bytes([255, 255, 255, 255]))
    sketch = document.createNode("Sketch", "paintlayer")
    document.rootNode().addChildNode(sketch, None)
    _fill(sketch, 200, 3, bytes([0, 0, 0, 255]), x=20, y=97)  # sketch lines: black on transparent
    _fill(sketch, 3, 150, bytes([40, 30, 20, 200]), x=131, y=21)
    document.waitForDone()
    sketch_id = sketch.uniqueId().toString()
    # kritarunner has no view and so no active layer to add: the session's own call, as Add layer makes it.
    controller.session().layers.set_control(ControlLayer(sketch_id, "scribble", 0.9, 0.0, 0.8))

    path = job["workdir"] + "/controls.kra"
    document.setBatchmode(True)
    out["saved"] = document.saveAs(path)
    document.close()
    document = Krita.instance().openDocument(path)
    session = controller.session()
    out["controls_after_reopen"] = [[c.layer_id == sketch_id, c.kind, c.strength, c.start, c.end, name]
                                    for c, name in controller.controls()]

    _select(document, *job["select"])
    settings = controller.settings
    settings.model, settings.prompt, settings.steps, settings.seed = job["model"], "a house", 3, 5
    settings.strength = 1.0
    received = session.receive

    def record(message) -> None:  # what the server said it did with the controls
        if isinstance(message, Result):
            out["result_controls"] = message.info.get("controls")
        received(message)

    session.receive = record
    controller.generate()
    request = session.jobs[0].request
    out["mode"], out["image_bounds"] = request.mode, list(request.image.bounds)
    out["controls_sent"] = [[c.kind, c.strength, c.start, c.end, list(c.image.bounds)] for c in request.control]
    x, y, w, h = request.image.bounds
    node = _node(document, "Sketch")
    out["control_is_the_layer"] = [c.image.data == swap_red_blue(bytes(node.pixelData(x, y, w, h)))
                                   for c in request.control]
    out["control_alpha_values"] = sorted(set(request.control[0].image.data[3::4])) if request.control else []
    out["finished"] = _wait_for_jobs(controller)
    out["message"] = controller.message
    out["applied"] = controller.apply()
    out["layers"] = layer_names(document)
    layer = _node(document, out["applied"])
    out["applied_bounds"] = _bounds(layer) if layer is not None else None


def _recording_answers(session) -> list:
    """The server's results for `session`, recorded on their way in, unchanged."""
    from shared.messages import Result

    answers, receive = [], session.receive

    def record(message) -> None:
        if isinstance(message, Result):
            answers.append(message)
        receive(message)

    session.receive = record
    return answers


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _made_control(job: dict, out: dict, controller, document, request, answer, name: str) -> None:
    """Findings on a control layer made from the canvas: the request's picture, the server's answer and the
    new layer's pixels (BGRA) over the answer's rectangle as files; where the layer lies, whether it is shown."""
    out["request_bounds"] = list(request.image.bounds)
    out["request"] = _write(f"{job['workdir']}/request.rgba", request.image.data)
    image = answer.images[0].image
    out["answer_bounds"] = list(image.bounds)
    out["answer"] = _write(f"{job['workdir']}/answer.rgba", image.data)
    layer = _node(document, name)
    out["layer_bounds"], out["layer_visible"] = _bounds(layer), layer.visible()
    out["layer"] = _write(f"{job['workdir']}/layer.bgra", bytes(layer.pixelData(*image.bounds)))
    out["controls"] = [[c.kind, c.strength, c.start, c.end, layer_name, c.layer_id == layer.uniqueId().toString()]
                       for c, layer_name in controller.controls()]


@report
def control_from_canvas(job: dict, out: dict) -> None:
    """The Control layers section's From canvas, headless: the selection's context region goes out as
    `preprocess`; the answer comes in as a hidden layer at its place, linked as a control of its kind and
    kept in the .kra; the artist's layers untouched."""
    controller = _prepare(job, out)
    width, height = job["size"]
    document = new_document(width, height)
    artist = _paint_scene(document)
    _select(document, *job["select"])
    session = controller.session()
    answers = _recording_answers(session)
    controller.control_from_canvas(job["kind"])
    request = session.jobs[0].request
    name = f"[Control] {job['kind']}"
    out["finished"] = pump(lambda: not session.jobs and _node(document, name) is not None, 60)
    out["message"] = controller.message
    _made_control(job, out, controller, document, request, answers[0], name)
    out["layers"] = [n for n in layer_names(document) if n != "Selection Mask"]
    out["artist_untouched"] = _untouched(document, artist)

    path = job["workdir"] + "/from-canvas.kra"
    document.setBatchmode(True)
    out["saved"] = document.saveAs(path)
    document.close()
    reopened = Krita.instance().openDocument(path)  # held: Krita closes a document whose wrapper is dropped
    out["controls_after_reopen"] = [[c.kind, layer_name, _node(reopened, layer_name).visible()]
                                    for c, layer_name in controller.controls()]


def _recorded(session, out: dict) -> None:
    """Note the server's answer to the session's jobs in `out` (code and field of an error; the references a
    result says it read: mode and adapter), unchanged."""
    from shared.messages import Error, Result

    received = session.receive

    def record(message) -> None:
        if isinstance(message, Error):
            out["server_error"] = [message.code, message.field]
        if isinstance(message, Result):
            out["result_references"] = [[r["mode"], r["model"]] for r in message.info.get("references", [])]
        received(message)

    session.receive = record


def _layer_rgba(node) -> tuple[list[int], bytes]:
    """A layer's bounds and its straight RGBA pixels over them."""
    from shared.images import swap_red_blue

    x, y, width, height = _bounds(node)
    return [x, y, width, height], swap_red_blue(bytes(node.pixelData(x, y, width, height)))


@report
def reference_layers(job: dict, out: dict) -> None:
    """A painted layer made a reference and a large picture file added as one (a new hidden layer) are
    kept in the .kra; reopened, an inpaint of a small selection sends both whole: the painted layer's
    own pixels over its own bounds, the picture shrunk to 1024 px a side."""
    controller = _prepare(job, out)
    from underpaint_krita.references import ReferenceLayer

    width, height = job["size"]
    document = new_document(width, height)
    _fill(document.rootNode().childNodes()[0], width, height, bytes([255, 255, 255, 255]))
    photo = document.createNode("Photo", "paintlayer")
    document.rootNode().addChildNode(photo, document.rootNode().childNodes()[0])
    x0, y0, w0, h0 = job["photo"]
    photo.setPixelData(bytes((x * 7 + y * 3 + c * 50) % 256 if c < 3 else 255 for y in range(h0) for x in range(w0)
                             for c in range(4)), x0, y0, w0, h0)
    document.waitForDone()
    photo_id = photo.uniqueId().toString()
    session = controller.session()
    # kritarunner has no view and so no active layer to add: the session's own call, as Add layer makes it.
    session.layers.set_reference(ReferenceLayer(photo_id, "reference", 0.7, 0.1, 0.9))
    big_width, big_height = job["picture"]
    # A smooth picture (red follows x, green y): shrunk in bands or at once, nearly the same pixels.
    row, rows = bytearray(b"\x80\xff" * 2 * big_width), []
    row[0::4] = bytes(x * 255 // big_width for x in range(big_width))
    for y in range(big_height):
        row[1::4] = bytes([y * 255 // big_height]) * big_width
        rows.append(bytes(row))
    pixels = b"".join(rows)
    picture = QImage(pixels, big_width, big_height, big_width * 4, QImage.Format_RGBA8888).copy()
    path = job["workdir"] + "/big photo.png"
    picture.save(path)
    big_id = controller.add_reference_picture(path, "style")
    out["message_after_import"] = controller.message
    big = next(n for n in document.rootNode().childNodes() if n.uniqueId().toString() == big_id)
    out["imported"] = [big.name(), big.visible(), _bounds(big)]
    out["layers_before_save"] = layer_names(document)

    path = job["workdir"] + "/references.kra"
    document.setBatchmode(True)
    out["saved"] = document.saveAs(path)
    document.close()
    document = Krita.instance().openDocument(path)
    session = controller.session()
    out["references_after_reopen"] = [[r.layer_id == photo_id, r.layer_id == big_id, r.mode, r.strength, r.start,
                                       r.end, name] for r, name in controller.references()]
    big = _node(document, "[Reference] big photo.png")
    out["imported_after_reopen"] = [big.visible(), _bounds(big)]

    _select(document, *job["select"])
    settings = controller.settings
    settings.model, settings.prompt, settings.steps, settings.seed = job["model"], "a garden", 3, 5
    _recorded(session, out)
    controller.generate()
    request = session.jobs[0].request
    out["mode"], out["image_bounds"] = request.mode, list(request.image.bounds)
    out["sent"] = [[r.mode, r.strength, r.start, r.end, r.image.width, r.image.height] for r in request.reference]
    photo_bounds, photo_rgba = _layer_rgba(_node(document, "Photo"))
    out["photo_bounds"] = photo_bounds
    out["photo_is_the_layer"] = request.reference[0].image.data == photo_rgba
    expected = picture.scaled(request.reference[1].image.width, request.reference[1].image.height,
                              Qt.IgnoreAspectRatio, Qt.SmoothTransformation).convertToFormat(QImage.Format_RGBA8888)
    bits = expected.constBits()
    bits.setsize(expected.sizeInBytes())
    sent = request.reference[1].image.data
    out["picture_difference"] = sum(abs(a - b) for a, b in zip(bytes(bits), sent, strict=True)) / len(sent)
    out["finished"] = _wait_for_jobs(controller)
    out["message"] = controller.message
    out["layers"] = layer_names(document)


def _activate(document, name: str, settled: float = 0.5, timeout: float = 10.0) -> str:
    """Make `name` the active layer as a click in the Layers docker would, and wait until it has stayed
    active for `settled` seconds: a view that was just opened may still activate the layer added last
    after the script's choice, and the job would then take that one as the artist's."""
    deadline = time.monotonic() + timeout
    steady_since = None
    while time.monotonic() < deadline:
        active = document.activeNode()
        if active is None or active.name() != name:
            document.setActiveNode(_node(document, name))  # the view applies it asynchronously
            steady_since = None
        elif steady_since is None:
            steady_since = time.monotonic()
        elif time.monotonic() - steady_since >= settled:
            break
        pump(lambda: False, 0.02)
    active = document.activeNode()
    return active.name() if active is not None else ""


def _docker():
    return next((d for d in Krita.instance().dockers() if d.objectName() == "underpaint_docker"), None)


@report
def gui_apply_undo(job: dict, out: dict) -> None:
    """In the GUI: the docker exists and drives the job; Apply adds one layer above the active
    layer; one undo removes it again."""
    plugin = extension({**job, "server": ""})  # the address comes from kritarc, as for an artist
    controller = plugin.controller
    out["url_at_start"] = controller.connection.url
    docker = _docker()
    out["docker"] = None if docker is None else [type(docker).__name__, docker.windowTitle()]
    out["connected"] = pump(lambda: controller.server.connected, 60)
    document = new_document(256, 192)
    artist = _paint_scene(document)
    _select(document, 100, 80, 60, 40)
    out["active_layer"] = _activate(document, "Paint")
    docker.show()
    docker.prompt.model.setCurrentIndex(docker.prompt.model.findData(job["model"]))
    docker.prompt.text.setPlainText("a blue bird")
    docker.advanced.toggle.setChecked(True)
    docker.advanced.steps.setValue(3)
    docker.generation.fixed_seed.setChecked(True)
    docker.generation.seed.setText("4000000000")  # beyond 32 bits, as seeds from the server often are
    out["fill_labels"] = [docker.generation.fill_mode.itemText(i) for i in range(docker.generation.fill_mode.count())]
    out["fill_at_start"] = docker.generation.fill_mode.currentData()
    docker.generation.fill_mode.setCurrentIndex(docker.generation.fill_mode.findData(job["fill"]))
    out["models_in_docker"] = [docker.prompt.model.itemText(i) for i in range(docker.prompt.model.count())]
    out["generate_label"] = docker.job.generate.text()
    out["settings"] = [controller.settings.model, controller.settings.prompt, controller.settings.steps,
                       controller.settings.seed]

    docker.job.generate.click()
    out["request_fill"] = controller.session().jobs[0].request.fill
    out["stored_fill"] = Krita.instance().readSetting("underpaint", "fill", "")
    out["finished"] = _wait_for_jobs(controller)
    pump(lambda: docker.results.thumbnails.count() > 0, 5)
    out["message"] = controller.message
    out["thumbnails"] = docker.results.thumbnails.count()
    out["active_layer_with_preview"] = document.activeNode().name()
    before_apply = layer_names(document)
    docker.results.apply.click()
    document.waitForDone()
    out["applied_message"] = docker.job.message.text()
    out["layers_after_apply"] = layer_names(document)
    out["layers_before_apply"] = before_apply
    out["artist_untouched"] = _untouched(document, artist)

    Krita.instance().action("edit_undo").trigger()
    document.waitForDone()
    pump(lambda: False, 0.3)
    out["layers_after_undo"] = layer_names(document)
    out["artist_untouched_after_undo"] = _untouched(document, artist)

    # Live, from the docker: a picture for the canvas, and a new one after a stroke on the active layer.
    docker.generation.fixed_seed.setChecked(False)
    docker.generation.strength.setValue(50)
    docker.job.live.click()
    session = controller.session()
    out["live_on"] = session.live is not None
    out["live_first"] = pump(lambda: session.live_result is not None, 60)
    seen = session.live_result
    _fill(_node(document, "Paint"), 20, 20, bytes([0, 200, 0, 255]), 110, 90)  # the artist paints
    document.refreshProjection()
    out["live_after_stroke"] = pump(lambda: session.live_result is not seen, 60)
    out["live_message"] = controller.message
    docker.results.apply.click()
    document.waitForDone()
    out["layers_after_live_apply"] = layer_names(document)
    docker.job.live.click()
    out["live_off"] = session.live is None


@report
def gui_upscale_undo(job: dict, out: dict) -> None:
    """In the GUI: the docker's Upscale scales the canvas as Image > Scale Image does and adds the
    upscaled picture as a layer; undo takes both back."""
    controller = extension({**job, "server": ""}).controller
    docker = _docker()
    out["connected"] = pump(lambda: controller.server.connected, 60)
    width, height = job["size"]
    document = new_document(width, height)
    artist = _paint_scene(document)
    out["bounds_before"] = {n.name(): _bounds(n) for n in document.rootNode().childNodes()}
    docker.show()
    docker.prompt.model.setCurrentIndex(docker.prompt.model.findData(job["model"]))
    docker.prompt.text.setPlainText("a red square")
    docker.upscale.scale.setCurrentIndex(docker.upscale.scale.findData(job["scale"]))
    out["upscalers"] = [docker.upscale.upscaler.itemText(i) for i in range(docker.upscale.upscaler.count())]
    docker.upscale.button.click()
    out["request"] = {k: getattr(controller.session().jobs[0].request, k) for k in ("mode", "scale", "upscaler")}
    out["finished"] = _wait_for_jobs(controller, 300)
    out["scaled"] = pump(lambda: document.width() == width * job["scale"], 30)
    document.waitForDone()
    out["message"] = controller.message
    out["size_after"] = [document.width(), document.height()]
    out["layers_after"] = layer_names(document)
    out["bounds_after"] = {n.name(): _bounds(n) for n in document.rootNode().childNodes()}
    result = next((n for n in document.rootNode().childNodes() if n.name().startswith("[Generated] upscaled")), None)
    out["result_pixel"] = None if result is None else list(bytes(result.pixelData(120, 130, 1, 1)))
    undo = Krita.instance().action("edit_undo")
    out["undone"] = []
    for _ in range(2):
        undo.trigger()
        document.waitForDone()
        pump(lambda: False, 0.5)
        out["undone"].append({"size": [document.width(), document.height()], "layers": layer_names(document)})
    out["artist_untouched_after_undo"] = _untouched(document, artist)


def _bounds(node) -> list[int]:
    bounds = node.bounds()
    return [bounds.x(), bounds.y(), bounds.width(), bounds.height()]


def _paint_landscape(document) -> None:
    """Sky, hills and a red house: a picture that reads at a glance in the screenshot."""
    width, height = document.width(), document.height()
    horizon = height * 3 // 5
    rows = []
    for y in range(height):
        if y < horizon:
            t = y / horizon
            rgb = (int(120 + 100 * t), int(175 + 60 * t), int(230 + 20 * t))
        else:
            t = (y - horizon) / (height - horizon)
            rgb = (int(110 - 50 * t), int(165 - 60 * t), int(85 - 40 * t))
        rows.append(bytes([rgb[2], rgb[1], rgb[0], 255]) * width)
    document.rootNode().childNodes()[0].setPixelData(b"".join(rows), 0, 0, width, height)
    house = document.createNode("House", "paintlayer")
    _fill(house, 120, 90, bytes([40, 40, 200, 255]), 140, horizon - 70)
    _fill(house, 30, 50, bytes([245, 245, 245, 255]), 185, horizon - 30)
    document.rootNode().addChildNode(house, None)
    document.refreshProjection()


@report
def screenshot_pose(job: dict, out: dict) -> None:
    """Krita as an artist sees it after one inpaint, in its default workspace: the docker where Krita
    docks it, at the right column's width, made taller by dragging the splitter above it, as an
    artist would. tools/screenshot.sh photographs this."""
    controller = extension({**job, "server": ""}).controller
    window = Krita.instance().activeWindow().qwindow()
    window.setGeometry(QApplication.primaryScreen().geometry())  # Xvfb has no window manager to maximize it
    docker = _docker()
    if not docker.isVisible():
        docker.toggleViewAction().trigger()
    window.resizeDocks([docker], [window.height()], Qt.Vertical)  # as tall as the others let it be
    out["connected"] = pump(lambda: controller.server.connected, 60)
    document = new_document(768, 512, name="landscape")
    _paint_landscape(document)
    _select(document, 420, 150, 220, 160)
    docker.prompt.model.setCurrentIndex(docker.prompt.model.findData(job["model"]))
    docker.prompt.text.setPlainText(job["prompt"])
    docker.prompt.negative.setPlainText("blurry, text")
    docker.generation.batch.setValue(2)
    docker.advanced.steps.setValue(job["steps"])
    docker.job.generate.click()
    out["finished"] = _wait_for_jobs(controller, 300)
    out["message"] = controller.message
    pump(lambda: False, 1.0)
    out["active_layer"] = document.activeNode().name()


@report
def live_detection_cost(job: dict, out: dict) -> None:
    """CPU spent by live mode's change detection on an idle 4096² canvas on the plugin's own
    schedule (a check every LiveSession.interval: the quick token every check, the exact one every
    2 s after asking the stroke guard), and what one quick and one exact token cost."""
    if "underpaint_krita" not in sys.modules:
        sys.path.insert(0, job["pykrita"])
        import underpaint_krita  # noqa: F401
    from underpaint_krita.document import KritaDocument
    from underpaint_krita.live import LiveSession
    from underpaint_krita.requests import Settings
    from underpaint_krita.stroke_guard import StrokeGuard

    from shared.crop import Rect

    side, seconds = job.get("side", 4096), job.get("seconds", 10.0)
    document = new_document(side, side)
    layer = document.createNode("sketch", "paintlayer")
    document.rootNode().addChildNode(layer, None)
    _fill(layer, side, side // 4, bytes((40, 60, 80, 255)))
    document.waitForDone()

    class ActiveLayer:
        """kritarunner has no window, so no active layer: stand in for the one the artist paints on."""

        def __getattr__(self, name: str):
            return getattr(document, name)

        def activeNode(self):  # noqa: N802 (Krita's name)
            return layer

    canvas, settings = KritaDocument(ActiveLayer()), Settings(model="m", prompt="x", strength=0.5)
    live, guard = LiveSession(), StrokeGuard()
    live.next_frame(canvas, settings, time.monotonic())  # the first frame reads the canvas: not detection

    frames, checks, start_cpu, start = 0, 0, time.process_time(), time.monotonic()
    while time.monotonic() - start < seconds:
        checks += 1
        frames += live.next_frame(canvas, settings, time.monotonic(),
                                  may_read=lambda: guard.allows(canvas.busy(), time.monotonic())) is not None
        time.sleep(max(0.0, start + checks * live.interval - time.monotonic()))
    elapsed = time.monotonic() - start
    out["idle"] = {"cpu_share_of_one_core": round((time.process_time() - start_cpu) / elapsed, 4),
                   "checks": checks, "frames": frames, "seconds": round(elapsed, 2)}

    def per_call_ms(call) -> float:
        began = time.perf_counter()
        for _ in range(5):
            call()
        return round((time.perf_counter() - began) / 5 * 1000, 2)

    out["side"] = side
    out["quick_token_ms"] = per_call_ms(canvas.quick_change_token)
    out["exact_token_ms"] = per_call_ms(lambda: canvas.change_token(Rect(0, 0, side, side)))
    before = canvas.quick_change_token()
    _fill(layer, 3, 3, bytes((255, 255, 255, 255)), x=side // 2, y=side // 2)
    out["quick_token_sees_a_3px_dab"] = canvas.quick_change_token() != before


def _canvas_widget(window):
    """The widget Krita draws the active view's canvas in (OpenGL or QPainter)."""
    return next(w for w in window.qwindow().findChildren(QWidget)
                if w.metaObject().className() in ("KisOpenGLCanvas2", "KisQPainterCanvas") and w.isVisible())


def _spiral(centre_x: int, centre_y: int, radius: float, points: int, turns: float = 3.0) -> list[tuple[int, int]]:
    path = []
    for i in range(points):
        t = i / (points - 1)
        angle, r = 2 * math.pi * turns * t, radius * (0.1 + 0.9 * t)
        path.append((round(centre_x + r * math.cos(angle)), round(centre_y + r * math.sin(angle))))
    return path


def _xdotool(path: list[tuple[int, int]], pause: float, press: bool = True, release: bool = True) -> list[str]:
    """An xdotool command line that moves through every point of `path`, `pause` seconds apart,
    pressing the left button at its start and releasing it at its end: a stroke the way a person's
    mouse makes it, or the part of one that `press` and `release` say."""
    (x, y), rest = path[0], path[1:]
    args = ["xdotool", "mousemove", str(x), str(y)] + (["sleep", str(STROKE_LEAD), "mousedown", "1"] if press else [])
    for x, y in rest:
        args += ["sleep", f"{pause:.3f}", "mousemove", str(x), str(y)]
    return args + (["sleep", "0.1", "mouseup", "1"] if release else [])


def _zigzag(centre_x: int, centre_y: int, reach: float, points: int, teeth: int = 5) -> list[tuple[int, int]]:
    path = []
    for i in range(points):
        t = i / (points - 1)
        tooth = (t * teeth * 2) % 2
        path.append((round(centre_x - reach + 2 * reach * t), round(centre_y + reach * (abs(tooth - 1) - 0.5))))
    return path


def _idle(document) -> bool:
    if document.tryBarrierLock():
        document.unlock()
        return True
    return False


def _checked_tool() -> list[str]:
    """The tool checked in the toolbox (its buttons are named by tool id)."""
    toolbox = next(d for d in Krita.instance().dockers() if d.objectName() == "ToolBox")
    return [b.objectName() for b in toolbox.findChildren(QAbstractButton) if b.isChecked() and b.objectName()]


class _Timeline:
    """What the artist's pointer, the active layer, live mode, jobs and the preview layer did, in
    seconds since `start`, noted at every check of a step's condition (every 10 ms). Seen from
    outside the plugin: the same scenario runs against any version of it."""

    def __init__(self, document, session, start: float):
        self.document, self.session, self.start = document, session, start
        self.events: list[tuple[float, str]] = []
        # When each live frame's id was first seen, in flight or as the shown result: a frame can go
        # out and come back between two checks.
        self.noted: dict[str, float] = {}
        self._seen = self._state()

    def _state(self) -> dict:
        session, document = self.session, self.document
        active = document.activeNode()
        preview = next((n for n in document.rootNode().childNodes() if n.name().startswith("[Preview]")), None)
        shows = None
        if preview is not None and preview.visible():
            shows = zlib.crc32(bytes(preview.pixelData(0, 0, document.width(), document.height())))
        return {"frames": set(session.live.frames) if session.live else set(), "live": session.live_result,
                "history": len(session.history), "shows": shows,
                "active": active.name() if active is not None else None,
                "pressed": int(QApplication.mouseButtons()) != 0}

    def watch(self) -> None:
        now, state, seen = round(time.monotonic() - self.start, 3), self._state(), self._seen
        self.events += [(now, "frame sent")] * len(state["frames"] - seen["frames"])
        for frame_id in state["frames"] | ({state["live"].id} if state["live"] else set()):
            self.noted.setdefault(frame_id, now)
        if state["live"] is not seen["live"] or state["history"] != seen["history"]:
            self.events.append((now, "picture received"))
        if state["shows"] != seen["shows"] and state["shows"] is not None:
            self.events.append((now, "picture shown"))
        if state["active"] != seen["active"]:
            self.events.append((now, f"active layer {state['active']}"))
        if state["pressed"] != seen["pressed"]:
            self.events.append((now, "pressed" if state["pressed"] else "released"))
        state["frames"] |= seen["frames"]
        self._seen = state

    def until(self, condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            self.watch()
            return condition()
        return check

    def times(self, event: str, after: float = -math.inf) -> list[float]:
        return [t for t, e in self.events if t > after and e == event]

    def stroke_frame_shown(self) -> bool:
        """Whether the live picture shown is that of a frame sent after the last release, and no
        frame is in flight. A frame first seen at the check that saw the release counts as after it:
        the events of one check came in an unknown order, and no frame goes out while the button is
        down (stroke_guard.py). Known by id, not by the preview's pixels changing: a frame of the
        same pixels as the one before shows no change."""
        session, live = self.session, self.session.live_result
        return (live is not None and self.noted[live.id] >= self.times("released")[-1] and not session.live.frames
                and session.waiting_preview is None)


@report
def gui_strokes(job: dict, out: dict):
    """In the GUI, as an artist paints: the same two brush strokes (xdotool presses, drags through
    many points, releases) on "Paint Layer 1" of a fresh document per case: Live off, Live on, and
    while a generate runs. The first is a long spiral, held still halfway until a picture arrives;
    the second starts as soon as that picture is shown (adding the preview layer), or right away
    with Live off. Per case: the painted layer's pixels (a file), the active layer, tool and
    selection before and after, the layers, and a timeline (_Timeline)."""
    controller, docker, preset = yield from _gui_start(job, out, "a spiral")
    if "settle" in job:  # for measuring what the stroke guard's wait costs
        controller.guard.settle = job["settle"]
    out["cases"] = {}
    for case in job["cases"]:
        out["cases"][case] = {}
        yield from _stroke_case(case, job, controller, docker, preset, out["cases"][case])


def _brush_document(name: str, width: int, height: int, preset):
    """Steps that make a fresh document of a locked white background and an active "Paint Layer 1",
    with `preset` on the brush tool; returns (document, paint layer)."""
    krita = Krita.instance()
    document = new_document(width, height, name=name)
    root = document.rootNode()
    background = root.childNodes()[0]
    _fill(background, width, height, bytes([255, 255, 255, 255]))
    background.setLocked(True)  # a stroke redirected there paints nothing
    paint = document.createNode("Paint Layer 1", "paintlayer")
    root.addChildNode(paint, background)  # Krita makes it the active layer
    yield lambda: document.activeNode() is not None and document.activeNode().name() == "Paint Layer 1"
    krita.activeWindow().activeView().setCurrentBrushPreset(preset)
    krita.action("KritaShape/KisToolBrush").trigger()
    yield 0.5
    return document, paint


def _gui_start(job: dict, out: dict, prompt: str):
    """Steps that show the docker, wait for the server and choose the job's model and `prompt`; returns
    (controller, docker, the Basic-5 brush preset)."""
    controller = extension({**job, "server": ""}).controller
    krita = Krita.instance()
    krita.activeWindow().qwindow().setGeometry(0, 0, 1600, 1000)  # Xvfb has no window manager to maximize it
    docker = _docker()
    docker.show()
    yield lambda: controller.server.connected
    out["connected"] = controller.server.connected
    docker.prompt.model.setCurrentIndex(docker.prompt.model.findData(job["model"]))
    docker.prompt.text.setPlainText(prompt)
    presets = krita.resources("preset")
    out["preset"] = next(name for name in sorted(presets) if "Basic-5" in name)
    return controller, docker, presets[out["preset"]]


def _stroke_case(case: str, job: dict, controller, docker, preset, found: dict):
    window = Krita.instance().activeWindow()
    width, height = job["size"]
    document, paint = yield from _brush_document(case, width, height, preset)

    def state() -> dict:
        active = document.activeNode()
        return {"active_layer": active.name() if active is not None else None, "tool": _checked_tool(),
                "selection": document.selection() is not None}

    found["before"] = state()
    session = controller.session()
    docker.advanced.steps.setValue(job["steps"])
    kind = case.split("-")[0]  # a kind may repeat: live-1, live-2
    if kind == "live":
        docker.generation.strength.setValue(50)
        docker.job.live.click()
    elif kind == "generate":
        docker.generation.strength.setValue(100)
        docker.advanced.steps.setValue(job["generate_steps"])
        docker.job.generate.click()
    canvas = _canvas_widget(window)
    centre = canvas.mapToGlobal(QPoint(canvas.width() // 2, canvas.height() // 2))
    side = min(canvas.width(), canvas.height())
    timeline = _Timeline(document, session, time.monotonic())
    spiral, half = _spiral(centre.x(), centre.y(), side * 0.3, job["points"]), job["points"] // 2
    yield from _xdotool_run(_xdotool(spiral[:half], job["pause"], release=False), timeline)
    # Halfway, the button held still (which paints nothing more) until a picture has arrived: the
    # first live frame's or the generate's, so it certainly comes during the stroke.
    yield 1.0 if kind == "off" else timeline.until(lambda: bool(timeline.times("picture received")))
    yield from _xdotool_run(_xdotool(spiral[half - 1:], job["pause"], press=False), timeline)
    if kind != "off":
        yield timeline.until(lambda: bool(timeline.times("picture shown", after=timeline.times("pressed")[0])))
    yield from _xdotool_run(_xdotool(_zigzag(centre.x(), centre.y(), side * 0.35, job["points"] // 4),
                                     job["pause"]), timeline)

    def settled() -> bool:
        """Every picture received is shown; with Live on, a frame with both strokes went out and
        came back."""
        received, shown = timeline.times("picture received"), timeline.times("picture shown")
        return (not session.jobs and (not received or (shown and shown[-1] >= received[-1]))
                and (session.live is None or timeline.stroke_frame_shown()) and _idle(document))

    yield timeline.until(settled)
    found["settled"] = settled()
    found["after"] = state()
    found["timeline"] = timeline.events
    found["layers"] = layer_names(document)
    found["message"] = controller.message
    found["pixels"] = f"{job['workdir']}/{case}.bgra"
    with open(found["pixels"], "wb") as f:
        f.write(bytes(paint.pixelData(0, 0, width, height)))
    if session.live is not None:
        docker.job.live.click()


def _live_stroke(job: dict, out: dict, docker, document, session):
    """Steps: the job's steps, strength 50% and Live on; once the first picture is shown, an artist's brush
    stroke (xdotool; a zigzag reaching `reach` of the canvas widget's shorter side, 0.3 unless the job
    says) on the active layer; done when the frame sent after it is shown. Notes whether it was
    (`stroke_shown`) and the timeline."""
    docker.advanced.steps.setValue(job["steps"])
    docker.generation.strength.setValue(50)
    docker.job.live.click()
    timeline = _Timeline(document, session, time.monotonic())
    yield timeline.until(lambda: bool(timeline.times("picture shown")))
    canvas = _canvas_widget(Krita.instance().activeWindow())
    centre = canvas.mapToGlobal(QPoint(canvas.width() // 2, canvas.height() // 2))
    zigzag = _zigzag(centre.x(), centre.y(), min(canvas.width(), canvas.height()) * job.get("reach", 0.3),
                     job["points"])
    yield from _xdotool_run(_xdotool(zigzag, job["pause"]), timeline)

    def stroke_shown() -> bool:
        return timeline.stroke_frame_shown() and _idle(document)

    yield timeline.until(stroke_shown)
    out["stroke_shown"], out["timeline"] = stroke_shown(), timeline.events


@report
def gui_live_apply(job: dict, out: dict):
    """In the GUI: Live on, an artist's brush stroke on "Paint Layer 1" (_live_stroke); once the frame
    with the stroke is shown, Apply, and Live off. The live picture as the preview showed it, and the applied [Live]
    layer's pixels (BGRA) over the same rectangle, go to files."""
    controller, docker, preset = yield from _gui_start(job, out, "a red circle")
    width, height = job["size"]
    document, paint = yield from _brush_document("live-apply", width, height, preset)
    session = controller.session()
    yield from _live_stroke(job, out, docker, document, session)
    live = session.live_result
    out["frame_id"], out["bounds"] = live.id, list(live.image.bounds)
    out["preview"] = f"{job['workdir']}/preview.rgba"
    with open(out["preview"], "wb") as f:
        f.write(live.image.data)
    docker.results.apply.click()
    docker.job.live.click()  # in the same step: no frame goes out after the Apply
    out["applying_message"] = controller.message

    def applied():
        return next((n for n in document.rootNode().childNodes() if n.name().startswith("[Live]")), None)

    yield lambda: applied() is not None and not session.applying
    out["message"] = controller.message
    out["layers"] = layer_names(document)
    x, y, w, h = live.image.bounds
    out["applied"] = f"{job['workdir']}/applied.bgra"
    with open(out["applied"], "wb") as f:
        f.write(bytes(applied().pixelData(x, y, w, h)))


@report
def gui_live_control(job: dict, out: dict):
    """In the GUI: "Paint Layer 1" added as a scribble control with the docker's Add layer, Live on, an
    artist's brush stroke on it (xdotool); the live frames sent, whether the one after the stroke carries
    the layer's pixels as its control image, and what the server says it did with it."""
    from shared.images import swap_red_blue
    from shared.messages import Live, Result

    controller, docker, preset = yield from _gui_start(job, out, "a house")
    width, height = job["size"]
    document, paint = yield from _brush_document("live-control", width, height, preset)
    session = controller.session()
    docker.controls.add.click()
    out["controls"] = [[c.kind, name] for c, name in controller.controls()]
    frames, results = [], []
    submit, receive = controller.connection.submit, session.receive

    def sent(message) -> None:  # observed on their way out and in, unchanged
        if isinstance(message, Live):
            frames.append(message)
        submit(message)

    def received(message) -> None:
        if isinstance(message, Result):
            results.append([message.id, message.info.get("controls")])
        receive(message)

    controller.connection.submit, session.receive = sent, received
    yield from _live_stroke(job, out, docker, document, session)
    docker.job.live.click()
    ink = swap_red_blue(bytes(paint.pixelData(0, 0, width, height)))
    out["ink_pixels"] = sum(1 for a in ink[3::4] if a)
    out["frames"] = [[f.id, [[c.kind, list(c.image.bounds), c.image.data == ink] for c in f.control]]
                     for f in frames]
    out["results"] = results
    out["layers"] = layer_names(document)


@report
def gui_control_from_canvas(job: dict, out: dict):
    """In the GUI: an artist's brush stroke (xdotool) on "Paint Layer 1", then a real click on the Control
    layers section's From canvas: the canvas with the stroke goes out as `preprocess`, the button says it is
    busy until the answer is in, which comes in as a hidden layer linked as a control of its kind, while
    "Paint Layer 1" stays the active layer; one undo removes the layer, the artist's layers untouched."""
    from shared.images import swap_red_blue

    controller, docker, preset = yield from _gui_start(job, out, "a house")
    width, height = job["size"]
    document, paint = yield from _brush_document("from-canvas", width, height, preset)
    session = controller.session()
    timeline = _Timeline(document, session, time.monotonic())
    canvas = _canvas_widget(Krita.instance().activeWindow())
    centre = canvas.mapToGlobal(QPoint(canvas.width() // 2, canvas.height() // 2))
    zigzag = _zigzag(centre.x(), centre.y(), min(canvas.width(), canvas.height()) * 0.3, job["points"])
    yield from _xdotool_run(_xdotool(zigzag, job["pause"]), timeline)
    yield timeline.until(lambda: _idle(document))
    out["ink_pixels"] = sum(1 for a in bytes(paint.pixelData(0, 0, width, height))[3::4] if a)
    artist = {n.name(): fingerprint(n, document) for n in document.rootNode().childNodes()}

    section = docker.controls
    section.toggle.setChecked(True)
    section.made_kind.setCurrentIndex(section.made_kind.findData(job["kind"]))
    yield 0.3  # laid out
    button = section.from_canvas
    docker.widget().ensureWidgetVisible(button)
    yield 0.3
    out["button_before"] = [button.text(), button.isEnabled()]
    spot = button.mapToGlobal(QPoint(button.width() // 2, button.height() // 2))
    if QApplication.widgetAt(spot) is not button:
        raise RuntimeError(f"From canvas is not on screen at {spot.x()}, {spot.y()}: {QApplication.widgetAt(spot)}")
    shown = []  # the button after each change the docker was told of (it refreshes first)
    controller.subscribe(lambda: shown.append([button.text(), button.isEnabled()]))
    answers, requests, submit = _recording_answers(session), [], controller.connection.submit

    def sent(message) -> None:  # observed on its way out, unchanged
        requests.append(message)
        submit(message)

    controller.connection.submit = sent
    click = subprocess.Popen(["xdotool", "mousemove", str(spot.x()), str(spot.y()), "click", "1"])
    name = f"[Control] {job['kind']}"
    yield timeline.until(lambda: click.poll() is not None and bool(requests))
    (request,) = requests
    yield timeline.until(lambda: not session.jobs and _node(document, name) is not None)
    watched = time.monotonic() + 1.0  # Krita makes a layer added by a script the active one a moment later
    yield timeline.until(lambda: time.monotonic() >= watched)
    out["message"] = controller.message
    out["busy"] = shown
    out["button_after"] = [button.text(), button.isEnabled()]
    out["canvas_sent"] = request.image.data == swap_red_blue(bytes(document.pixelData(0, 0, width, height)))
    _made_control(job, out, controller, document, request, answers[0], name)
    out["layers"] = layer_names(document)
    out["active_layer"] = document.activeNode().name()
    out["active_changes"] = [e for _, e in timeline.events if e.startswith("active layer")]
    out["artist_untouched"] = _untouched(document, artist)

    Krita.instance().action("edit_undo").trigger()
    document.waitForDone()
    yield 0.5
    out["layers_after_undo"] = layer_names(document)
    out["controls_after_undo"] = [[c.kind, layer_name] for c, layer_name in controller.controls()]
    out["artist_untouched_after_undo"] = _untouched(document, artist)


@report
def gui_reference_stroke(job: dict, out: dict):
    """In the GUI: "Paint Layer 1" added as a reference picture with the docker's Add layer, an artist's
    brush stroke on it (xdotool), then Generate: the reference the request carries, against the layer's
    pixels over its bounds once the stroke ended, and the server's answer."""
    controller, docker, preset = yield from _gui_start(job, out, "a garden")
    width, height = job["size"]
    document, paint = yield from _brush_document("reference-stroke", width, height, preset)
    session = controller.session()
    docker.references.toggle.setChecked(True)
    docker.references.mode.setCurrentIndex(docker.references.mode.findData("style"))
    docker.references.add.click()
    out["references"] = [[r.mode, r.strength, name] for r, name in controller.references()]
    from underpaint_krita.sections.layers import THUMBNAIL_ROLE

    rows = docker.references.layer_list
    thumbnails = [rows.item(0).data(THUMBNAIL_ROLE)]  # a checksum of the thumbnail shown
    timeline = _Timeline(document, session, time.monotonic())
    canvas = _canvas_widget(Krita.instance().activeWindow())
    centre = canvas.mapToGlobal(QPoint(canvas.width() // 2, canvas.height() // 2))
    zigzag = _zigzag(centre.x(), centre.y(), min(canvas.width(), canvas.height()) * job["reach"], job["points"])
    yield from _xdotool_run(_xdotool(zigzag, job["pause"]), timeline)
    yield timeline.until(lambda: _idle(document))
    yield 0.5
    _recorded(session, out)
    docker.advanced.steps.setValue(job["steps"])
    docker.generation.strength.setValue(100)
    docker.job.generate.click()
    request = session.jobs[0].request if session.jobs else None
    out["message_after_click"] = controller.message
    bounds, ink = _layer_rgba(paint)
    out["layer_bounds"] = bounds
    out["ink_pixels"] = sum(1 for a in ink[3::4] if a)
    out["sent"] = None if request is None else [[r.mode, r.strength, r.image.width, r.image.height,
                                                 r.image.data == ink] for r in request.reference]
    yield lambda: not session.jobs
    out["message"] = controller.message
    out["layers"] = layer_names(document)
    thumbnails.append(rows.item(0).data(THUMBNAIL_ROLE))
    out["thumbnails"] = [thumbnails[0] is not None, thumbnails[1] is not None, thumbnails[0] != thumbnails[1],
                         not rows.item(0).icon().isNull()]


def _xdotool_run(command: list[str], timeline: _Timeline):
    """Steps: run xdotool until it is done and Krita has seen the press or release it ends with."""
    pressed = command[-2:] != ["mouseup", "1"]
    xdotool = subprocess.Popen(command)
    yield timeline.until(lambda: xdotool.poll() is not None and (int(QApplication.mouseButtons()) != 0) == pressed)
    if xdotool.returncode:
        raise RuntimeError(f"xdotool failed ({xdotool.returncode}): {' '.join(command[:8])} …")


def _screenshot(path: str, docker) -> None:
    """The screen, and the docker alone beside it (`-docker` before the suffix)."""
    subprocess.run(["import", "-window", "root", path], check=True, timeout=60)
    docker.grab().save(path.replace(".png", "-docker.png"))


@report
def gui_docker_in_the_default_layout(job: dict, out: dict):
    """In the GUI, Krita's default workspace: the docker where Krita docks it (the right column,
    under Layers and Brush Presets). What of it cannot be read there (docker_layout.py), with Live
    off and on, then floated at the job's sizes; screenshots of each. Then the model's recommended
    settings in the docker, and a style picked from its combo shaping the request it sends."""
    controller = extension({**job, "server": ""}).controller
    import docker_layout  # takes Qt from the plugin, loaded by now

    krita = Krita.instance()
    window = krita.activeWindow().qwindow()
    window.setGeometry(0, 0, 1600, 1000)  # Xvfb has no window manager that could maximize it
    docker = _docker()
    if not docker.isVisible():
        docker.toggleViewAction().trigger()  # what Settings ▸ Dockers ▸ Underpaint does
    yield lambda: controller.server.connected
    out["connected"] = controller.server.connected
    yield 1.0
    area = window.dockWidgetArea(docker)
    out["right"] = area == Qt.DockWidgetArea.RightDockWidgetArea
    column = [d for d in krita.dockers() if d.isVisible() and not d.isFloating() and window.dockWidgetArea(d) == area]
    out["below"] = sorted(d.objectName() for d in column if d.geometry().bottom() <= docker.geometry().top())
    out["states"] = {}

    def look(name: str) -> dict:
        found = docker_layout.problems(docker)
        found["screenshot"] = f"{job['workdir']}/{name}.png"
        _screenshot(found["screenshot"], docker)
        out["states"][name] = found
        return found

    look("docked")
    docker.job.live.click()
    yield 1.0
    out["live_status"] = docker.job.live_status.text() if docker.job.live_status.isVisible() else None
    out["live_button"] = [docker.job.live.text(), docker.job.live.isChecked()]
    docker.widget().ensureWidgetVisible(docker.job.live_status)
    yield 0.3
    look("docked-live")
    docker.job.live.click()
    for width, height in job["floating"]:
        docker.setFloating(True)
        docker.setGeometry(300, 100, width, height)  # no window manager places it
        yield 0.5
        look(f"floating-{width}")
    docker.setFloating(False)
    yield 0.5

    # The model's recommendations fill the advanced settings; a style from the combo at the top.
    advanced = docker.advanced
    advanced.toggle.setChecked(True)
    out["recommended_shown"] = [advanced.steps.value(), advanced.cfg.value(), advanced.scheduler.currentData()]
    out["styles_folder"] = sorted(p.name for p in controller.choices.library.folder.iterdir())
    new_document(256, 192)
    picker = docker.styles.picker
    index = picker.findData(job["style"])
    picker.setCurrentIndex(index)
    picker.activated.emit(index)  # as when the artist picks it
    docker.prompt.text.setPlainText("a lighthouse")
    docker.prompt.negative.setPlainText("fog")
    out["shown_with_style"] = [advanced.steps.value(), advanced.cfg.value(), advanced.scheduler.currentData()]
    docker.job.generate.click()
    request = controller.session().jobs[0].request
    out["request"] = {name: getattr(request, name) for name in ("model", "prompt", "negative_prompt", "steps",
                                                                  "cfg_scale", "scheduler")}
    out["message"] = controller.message
    yield lambda: not controller.session().jobs
    out["finished_message"] = controller.message


def _rgba_at(image, x: int, y: int) -> list[int]:
    """The pixel of a protocol Image (rgba8) at (x, y)."""
    start = (y * image.width + x) * 4
    return list(image.data[start:start + 4])


@report
def training_pictures(job: dict, out: dict) -> None:
    """The Krita glue of the Train dialog alone (no server): the visible layers of the active document
    and the open documents as pictures to train on, each shrunk to the training area."""
    extension(job)
    from underpaint_krita.document import KritaDocument, KritaWorkspace

    deep = new_document(64, 64, "U16", "deep")
    # 16-bit BGRA, little-endian: red at full.
    _fill(deep.rootNode().childNodes()[0], 64, 64, bytes([0, 0, 0, 0, 255, 255, 255, 255]))
    document = new_document(256, 192)  # the newest: kritarunner has no view, so it is the active one
    _paint_scene(document)
    hidden = document.createNode("Hidden", "paintlayer")
    _fill(hidden, 10, 10, RED_BGRA)
    hidden.setVisible(False)
    document.rootNode().addChildNode(hidden, None)
    document.waitForDone()
    deep.waitForDone()
    workspace = KritaWorkspace()
    out["active"] = workspace.active_document().document.name()
    side = job["side"]
    pictures = workspace.layer_pictures(side)
    out["layers"] = [[p.label, p.image.width, p.image.height, p.image.format] for p in pictures]
    paint = next(p.image for p in pictures if p.label == "Paint")
    scale = paint.width / 256
    # The red square (60x50 at 30, 40): its centre, and the transparent corner of its layer.
    out["paint_centre"] = _rgba_at(paint, round(60 * scale), round(65 * scale))
    out["paint_corner"] = _rgba_at(paint, 0, 0)
    # Unshrunk, the layer's pixels where they are on the canvas.
    whole = next(p.image for p in workspace.layer_pictures(256) if p.label == "Paint")
    out["paint_whole"] = [whole.width, whole.height, sum(1 for a in whole.data[3::4] if a),
                          _rgba_at(whole, 30, 40), _rgba_at(whole, 29, 40), _rgba_at(whole, 89, 89)]
    (deep_layer,) = KritaDocument(deep).layer_pictures(side)  # read from an 8-bit copy of the 16-bit layer
    out["deep_layer_centre"] = _rgba_at(deep_layer.image, 32, 32)
    out["deep_layer_depth_after"] = deep.rootNode().childNodes()[0].colorDepth()
    documents = workspace.document_pictures(side)
    out["documents"] = [[p.label, p.image.width, p.image.height] for p in documents]
    test = next(p.image for p in documents if p.label == "test")
    out["document_centre"] = _rgba_at(test, round(60 * scale), round(65 * scale))
    deep_picture = next(p.image for p in documents if p.label == "deep")
    out["deep_centre"] = _rgba_at(deep_picture, 32, 32)


@report
def gui_train_from_layers(job: dict, out: dict):
    """In the GUI, as an artist trains: a brush stroke (xdotool) on "Paint Layer 1" and a scripted
    square on "Square"; the Train dialog from the LoRA menu adds the visible layers, and a short
    training runs on the server. The pictures, the request, the run as it ended and the LoRA menu."""
    controller, docker, preset = yield from _gui_start(job, out, "a spiral")
    width, height = job["size"]
    document, paint = yield from _brush_document("train", width, height, preset)
    canvas = _canvas_widget(Krita.instance().activeWindow())
    centre = canvas.mapToGlobal(QPoint(canvas.width() // 2, canvas.height() // 2))
    timeline = _Timeline(document, controller.session(), time.monotonic())
    zigzag = _zigzag(centre.x(), centre.y(), min(canvas.width(), canvas.height()) * 0.3, job["points"])
    yield from _xdotool_run(_xdotool(zigzag, job["pause"]), timeline)
    yield lambda: _idle(document)
    out["stroke_ink"] = sum(1 for a in bytes(paint.pixelData(0, 0, width, height))[3::4] if a)
    square = document.createNode("Square", "paintlayer")
    _fill(square, 40, 30, bytes([255, 0, 0, 255]), 20, 20)  # blue, BGRA
    document.rootNode().addChildNode(square, paint)
    document.refreshProjection()
    yield lambda: _idle(document)

    menu = docker.prompt.networks.menu()
    menu.aboutToShow.emit()
    next(action for action in menu.actions() if action.text() == "Train…").trigger()
    dialog = docker.prompt.train_dialog
    dialog.add_layers.click()
    rows = dialog.rows()
    out["pictures"] = [row.picture.label for row in rows]
    out["picture_ink"] = {row.picture.label: sum(1 for a in row.picture.image.data[3::4] if a) for row in rows}
    out["picture_sizes"] = {row.picture.label: [row.picture.image.width, row.picture.image.height] for row in rows}
    for row in rows:
        row.caption.setText(f"a drawing on {row.picture.label}")
    dialog.model.setCurrentIndex(dialog.model.findData(job["model"]))
    dialog.trigger.setText(job["trigger"])
    dialog.subject.setCurrentIndex(dialog.subject.findData(job["subject"]))
    dialog.steps.setValue(job["steps"])
    dialog.start.click()
    run = controller.training
    out["status_at_start"] = dialog.status.text()
    if run is None:
        return
    request = run.request
    out["request"] = {"kind": request.kind, "model": request.model, "name": request.name,
                      "trigger": request.trigger, "steps": request.steps, "resolution": request.resolution,
                      "captions": [image.caption for image in request.images]}
    yield lambda: run.finished
    out["state"], out["message"], out["trained"] = run.state, run.message, run.trained
    out["losses"] = run.losses
    out["progress"] = [dialog.progress.value(), dialog.progress.maximum()]
    out["status"] = dialog.status.text()
    out["curve_points"] = len(dialog.curve.points)
    yield lambda: run.trained is not None and any(m.name == run.trained for m in controller.networks())
    menu.aboutToShow.emit()
    out["menu"] = [action.text() for action in menu.actions() if action.text()]


@report
def training_pictures_cost(job: dict, out: dict) -> None:
    """What the Train dialog's "Add visible layers" and "Add open images" cost on a large canvas: the
    time per picture, the bytes that go to the server against the layers' raw pixels, and the growth
    of Krita's peak memory while reading."""
    import resource

    extension(job)
    from underpaint_krita.document import KritaWorkspace

    side, layers, training_side = job["side"], job["layers"], job["training_side"]
    document = new_document(side, side)
    rows = side // 4
    for i in range(layers):
        layer = document.createNode(f"layer {i}", "paintlayer")
        band = bytes((40 + 50 * i, 60, 80, 255)) * (side * rows)
        for y in range(0, side, rows):  # a quarter of the canvas at a time: no 64 MB buffer in the scenario
            layer.setPixelData(band, 0, y, side, rows)
        document.rootNode().addChildNode(layer, None)
    document.waitForDone()
    workspace = KritaWorkspace()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    pictures = workspace.layer_pictures(training_side)
    layer_seconds = time.perf_counter() - began
    peak_after_layers = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    documents = workspace.document_pictures(training_side)
    document_seconds = time.perf_counter() - began
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    raw = side * side * 4
    out.update({
        "side": side, "training_side": training_side, "layers": len(pictures),
        "picture_size": [pictures[0].image.width, pictures[0].image.height],
        "seconds_per_layer": round(layer_seconds / len(pictures), 3),
        "seconds_per_document": round(document_seconds / len(documents), 3),
        "raw_bytes_per_picture": raw, "sent_bytes_per_picture": len(pictures[0].image.data),
        "sent_to_raw": round(len(pictures[0].image.data) / raw, 4),
        "peak_memory_growth_mb": {"layers": round((peak_after_layers - peak_before) / 1024, 1),
                                  "documents": round((peak_after - peak_after_layers) / 1024, 1)},
    })
