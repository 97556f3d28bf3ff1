"""The plugin inside real Krita: kritarunner (headless) scenarios and a GUI Krita under Xvfb.

Krita runs in a clean environment (env -i): only HOME, PATH, fresh XDG folders holding the
installed plugin, and PYTHONPATH naming tests/krita. A virtualenv or our own site-packages
would break Krita's Python. Each scenario writes its findings as JSON; the asserts are here.

Undo is checked in the GUI test: kritarunner has no main window, so Krita's actions (edit_undo)
do not exist there, and Krita.openWindow() crashes it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from plugin_support import server_url_or_own

from shared.crop import Rect, context_rect, edge_defaults
from shared.images import swap_red_blue
from testing.krita import KRITA, KRITARUNNER, XVFB, KritaHome, run_gui, run_scenario
from testing.processes import ServerProcess
from testing.tiny_controlnets import write_tiny_controlnets
from testing.tiny_models import tiny_autoencoder

pytestmark = pytest.mark.krita

XDOTOOL = shutil.which("xdotool")

needs_kritarunner = pytest.mark.skipif(KRITARUNNER is None, reason="kritarunner is not installed")
needs_gui = pytest.mark.skipif(KRITA is None or XVFB is None, reason="krita or Xvfb is not installed")
needs_strokes = pytest.mark.skipif(KRITA is None or XVFB is None or XDOTOOL is None,
                                   reason="krita, Xvfb or xdotool is not installed")
# Krita's brush is not bit-identical between two runs of the same xdotool stroke: while Krita is busy,
# pointer moves reach it merged, which shifts a few dab edges (seen: up to 0.5% of the ink). A cut
# or vanished stroke loses far more: with Live on before the fix, 50-90% of it.
INK_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def plugin_server_url(request: pytest.FixtureRequest, models_dir: Path, references: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from server_url_or_own(request, models_dir, tmp_path_factory, references)


@pytest.fixture(scope="module")
def krita_home(tmp_path_factory: pytest.TempPathFactory) -> KritaHome:
    """One home for the module: Krita builds its resource database (~10 s) only once."""
    return KritaHome(tmp_path_factory.mktemp("krita-home"))


@needs_kritarunner
def test_document_glue_in_real_krita(krita_home: KritaHome) -> None:
    found = run_scenario(krita_home, "document_glue", server="")
    # Krita's Python has none of the plugin's dependencies: they come from its vendor folder, pure Python.
    vendor = str(krita_home.pykrita / "underpaint_krita" / "vendor")
    assert all(path.startswith(vendor) for path in found["modules"].values()), found["modules"]
    assert found["msgpack_packer"] == "msgpack.fallback"
    assert found["size"] == [64, 48]
    # Krita's bytes are BGRA; the plugin's are RGBA, both ways.
    assert found["read_red"] == [255, 0, 0, 255] * 2
    assert found["result_layer_bgra"] == [0, 255, 0, 128]
    assert found["result_layer_bounds"] == [5, 6, 2, 2]
    preview = found["preview"]
    assert preview["name"] == "[Preview] second" and preview["locked"] and preview["visible"]
    assert preview["old_pixel"] == [0, 0, 0, 0]  # the first preview's pixels were cleared
    assert preview["old_projection"] == [255, 0, 0, 255]  # ... and the canvas shows what is under them
    assert preview["new_pixel"] == [255, 255, 255, 255] and preview["projection"] == [255, 255, 255, 255]
    assert found["read_under_preview"] == [255, 0, 0, 255]  # the canvas is read without the preview
    assert found["preview_visible_after_read"] and not found["preview_visible_after_hide"]
    assert found["selection_bounds"] == [3, 4, 5, 6]
    assert found["selection_row"] == [0, 255, 255]
    before = found["layers_before_insert"]
    assert before == ["Background", "[Generated] green (1)", "[Preview] second"]
    after = [name for name in found["layers_after_insert"] if name != "Selection Mask"]
    if found["active_layer"] == "Background":  # a view exists: above the active layer
        assert after == ["Background", "[Generated] above background (2)", *before[1:]]
    else:  # kritarunner has no view, so no active layer: on top, below the preview
        assert found["active_layer"] is None
        assert after == [*before[:2], "[Generated] above background (2)", before[2]]
    # Another depth: read through Krita's conversion, written into a layer of the document's depth.
    assert found["deep_read_red"] == [255, 0, 0, 255]
    assert found["deep_layer_space"] == ["RGBA", "U16"]
    assert found["deep_projection"] == [0, 255, 0, 255]
    # The preview, rewritten in place: the second picture where it lies, the canvas around it.
    assert found["deep_preview"] == [[255, 255, 255, 255], [0, 255, 0, 255]]
    grey = found["grey_read"]
    assert grey[0] == grey[1] == grey[2] and 150 < grey[0] < 250 and grey[3] == 255
    assert found["grey_layer_space"] == "GRAYA"
    assert found["region_name"] == "sky"
    assert found["region_alpha"] == [0, 128, 128] and found["missing_region_alpha"] is None
    assert found["control_rgba"] == [0, 0, 0, 0, 0, 0, 255, 128]  # BGRA (255, 0, 0, 128) is blue
    assert found["deep_control_rgba"] == [255, 0, 0, 255] and found["deep_background_space"] == ["RGBA", "U16"]
    assert found["saved"] and found["history_after_reopen"] == "history\x00blob"
    assert found["regions_after_reopen"] == '{"regions": "blob"}'
    assert found["region_alpha_after_reopen"] == [0, 128, 128]  # layer ids survive the .kra
    assert found["fresh_history"] is None


@needs_kritarunner
def test_inpaint_apply_in_real_krita(krita_home: KritaHome, plugin_server_url: str) -> None:
    found = run_scenario(krita_home, "inpaint_apply", server=plugin_server_url, model="tiny-sd15-inpaint")
    assert found["connected"] and "tiny-sd15-inpaint" in found["models"]
    assert found["finished"] and found["message"] == ""
    (result,) = found["results"]
    assert result[1] == 5  # the fixed seed
    assert found["preview"] == ["[Preview] a blue bird", True, True]
    assert found["applied"] == "[Generated] a blue bird (5)"
    # kritarunner has no view and so no active layer: the new layer goes on top, under the preview.
    layers = [name for name in found["layers"] if name != "Selection Mask"]
    assert layers == ["Background", "Paint", "Top", "[Generated] a blue bird (5)", "[Preview] a blue bird"]
    assert not found["preview_visible_after_apply"]
    # The result covers the selection and nothing beyond its grown, feathered edge.
    box = Rect(100, 80, 60, 40)
    assert found["opaque_outside_grown_selection"] == 0
    assert found["opaque_inside_grown_selection"] >= found["selection_pixels"]
    assert found["opaque_inside_grown_selection"] <= box.grown(edge_defaults(box).reach).width * box.grown(
        edge_defaults(box).reach).height
    assert found["centre_alpha"] == 255
    assert found["artist_untouched"] == {"Background": True, "Paint": True, "Top": True}
    assert found["saved"] and found["history_after_reopen"] == [[result[0], 5]]


@needs_kritarunner
def test_refined_red_stays_red_in_real_krita(krita_home: KritaHome, plugin_server_url: str) -> None:
    """Krita's layers are BGRA: a channel-order slip anywhere on the way would turn red into blue."""
    found = run_scenario(krita_home, "refine_keeps_red", server=plugin_server_url, model="tiny-sd15-inpaint",
                         strength=0.05, steps=20, select=[32, 32, 64, 64])
    assert found["finished"] and found["message"] == ""
    assert found["pixels"] > 0
    assert found["mean_red"] > 150 and found["mean_blue"] < 100, found


@pytest.fixture(scope="module")
def control_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the tiny models and the tiny ControlNets (a second models folder)."""
    controlnets = tmp_path_factory.mktemp("controlnets")
    write_tiny_controlnets(controlnets)
    with ServerProcess(models_dir, tmp_path_factory.mktemp("control-server"), "--models", str(controlnets)) as server:
        yield server


@needs_kritarunner
def test_a_control_layer_is_kept_in_the_kra_and_sent_cropped_like_the_image_in_real_krita(
        krita_home: KritaHome, control_server: ServerProcess) -> None:
    box = Rect(101, 83, 37, 29)
    found = run_scenario(krita_home, "control_layers", server=control_server.url, model="tiny-sd15-inpaint",
                         select=[box.x, box.y, box.width, box.height])
    assert "error" not in found, found.get("error")
    assert found["connected"] and found["saved"]
    assert found["controls_after_reopen"] == [[True, "scribble", 0.9, 0.0, 0.8, "Sketch"]]
    rect = context_rect(box, Rect(0, 0, 256, 192), edge_defaults(box))
    assert found["mode"] == "inpaint" and found["image_bounds"] == [rect.x, rect.y, rect.width, rect.height]
    assert found["controls_sent"] == [["scribble", 0.9, 0.0, 0.8, found["image_bounds"]]]
    # The layer's own pixels, transparency included (the server reads the strokes' coverage), in RGBA.
    assert found["control_is_the_layer"] == [True] and found["control_alpha_values"] == [0, 200, 255]
    assert found["finished"] and found["message"] == ""
    assert found["result_controls"] == [{"kind": "scribble", "model": "tiny-sd15-scribble", "strength": 0.9,
                                         "start": 0.0, "end": 0.8}]
    assert found["applied"] == "[Generated] a house (5)" and found["applied"] in found["layers"]
    assert found["layers"][:2] == ["Background", "Sketch"]


@needs_strokes
def test_live_follows_a_brush_stroke_on_a_control_layer_in_gui_krita(
        krita_home: KritaHome, control_server: ServerProcess) -> None:
    """The headline: a sketch layer made a scribble control in the docker, Live on, a real brush stroke on
    it: the next frame carries the stroke as its control image and the server runs the scribble
    ControlNet on it."""
    found = run_gui(krita_home, "gui_live_control", control_server.url, model="tiny-sd15", size=[256, 192],
                    points=60, pause=0.02, steps=4)
    assert "Traceback" not in found["log"] and "error" not in found, found.get("error") or found["log"][-3000:]
    assert found["connected"] and found["controls"] == [["scribble", "Paint Layer 1"]]
    assert found["stroke_shown"] and found["ink_pixels"] > 500, (found["ink_pixels"], found["timeline"])
    controls = [control for _, control in found["frames"]]
    assert controls[0] == []  # nothing sketched yet: no control image
    # The frame after the stroke: the whole layer as it is once the stroke ended.
    assert controls[-1] == [["scribble", [0, 0, 256, 192], True]]
    used = {frame_id: info for frame_id, info in found["results"]}
    assert used[found["frames"][-1][0]] == [{"kind": "scribble", "model": "tiny-sd15-scribble", "strength": 1.0,
                                             "start": 0.0, "end": 1.0}]


def _made_from(found: dict, kind: str) -> bytes:
    """The checks every control layer made from the canvas passes; returns the server's answer (RGBA).
    The answer lies where the request's picture lay, is what the server's preprocessor makes of that
    picture (over the canvas's white, as the server reads it), and the layer holds it there."""
    from server.imaging import payloads
    from server.imaging.preprocess import PREPROCESSORS
    from shared.messages import Image

    assert found["request_bounds"] == found["answer_bounds"] == found["layer_bounds"]
    x, y, width, height = found["request_bounds"]
    request = Image(width=width, height=height, format="rgba8", data=Path(found["request"]).read_bytes())
    made = PREPROCESSORS[kind](np.asarray(payloads.flattened(payloads.to_pil(request, "image"))))
    answer = Path(found["answer"]).read_bytes()
    assert np.frombuffer(answer, np.uint8).reshape(height, width, 4)[..., :3].tolist() == made.tolist()
    assert made.any()  # there were lines to find
    assert swap_red_blue(Path(found["layer"]).read_bytes()) == answer
    assert not found["layer_visible"]  # its black would cover the canvas the next picture is made from
    name = f"[Control] {kind}"
    assert found["controls"] == [[kind, 1.0, 0.0, 1.0, name, True]]  # linked, with the default settings
    assert found["message"] == f"Added the control layer “{name}” (hidden; it steers the next pictures)."
    return answer


@needs_kritarunner
def test_a_control_layer_made_from_the_canvas_lies_where_the_answer_does_in_real_krita(
        krita_home: KritaHome, plugin_server_url: str) -> None:
    width, height = 640, 480
    box = Rect(71, 83, 37, 29)
    found = run_scenario(krita_home, "control_from_canvas", server=plugin_server_url, kind="canny",
                         size=[width, height], select=[box.x, box.y, box.width, box.height])
    assert "error" not in found, found.get("error")
    assert found["connected"] and found["finished"], found["message"]
    region = context_rect(box, Rect(0, 0, width, height), edge_defaults(box))
    assert found["request_bounds"] == [region.x, region.y, region.width, region.height] != [0, 0, width, height]
    _made_from(found, "canny")
    # kritarunner has no view and so no active layer: the new layer goes on top.
    assert found["layers"] == ["Background", "Paint", "Top", "[Control] canny"]
    assert found["artist_untouched"] == {"Background": True, "Paint": True, "Top": True}
    assert found["saved"] and found["controls_after_reopen"] == [["canny", "[Control] canny", False]]


@needs_strokes
def test_from_canvas_after_a_brush_stroke_adds_a_control_layer_and_one_undo_removes_it_in_gui_krita(
        krita_home: KritaHome, plugin_server_url: str) -> None:
    found = run_gui(krita_home, "gui_control_from_canvas", plugin_server_url, model="tiny-sd15", size=[256, 192],
                    points=60, pause=0.02, kind="scribble")
    assert "Traceback" not in found["log"] and "error" not in found, found.get("error") or found["log"][-3000:]
    assert found["connected"] and found["ink_pixels"] > 500
    assert found["button_before"] == ["From canvas", True] == found["button_after"]
    assert ["Making…", False] in found["busy"]  # busy from the click until the layer is in
    assert found["canvas_sent"] and found["request_bounds"] == [0, 0, 256, 192]  # the canvas with the stroke
    _made_from(found, "scribble")
    artist = {"Background": True, "Paint Layer 1": True}
    assert found["layers"] == ["Background", "Paint Layer 1", "[Control] scribble"]  # above the active layer
    assert found["active_layer"] == "Paint Layer 1", found["active_changes"]  # the next stroke goes there
    assert found["artist_untouched"] == artist
    assert found["layers_after_undo"] == ["Background", "Paint Layer 1"] and found["controls_after_undo"] == []
    assert found["artist_untouched_after_undo"] == artist


@needs_kritarunner
def test_reference_pictures_are_kept_in_the_kra_and_sent_whole_in_real_krita(
        krita_home: KritaHome, plugin_server_url: str) -> None:
    """A painted layer and a picture file (imported as a hidden layer) made references survive the .kra;
    an inpaint of a small selection then sends each whole, the large picture shrunk to 1024 px a side."""
    box, canvas = Rect(801, 597, 23, 17), Rect(0, 0, 1024, 768)
    found = run_scenario(krita_home, "reference_layers", server=plugin_server_url, model="tiny-sd15-inpaint",
                         size=[canvas.width, canvas.height], photo=[37, 21, 61, 43], picture=[1500, 1000],
                         select=[box.x, box.y, box.width, box.height])
    assert found["connected"] and found["saved"] and found["message_after_import"] == ""
    # The picture came in as a new hidden layer of its own size, the artist's layers as they were.
    assert found["imported"] == ["[Reference] big photo.png", False, [0, 0, 1500, 1000]]
    assert found["layers_before_save"] == ["Background", "Photo", "[Reference] big photo.png"]
    assert found["references_after_reopen"] == [[True, False, "reference", 0.7, 0.1, 0.9, "Photo"],
                                                [False, True, "style", 0.6, 0.0, 1.0, "[Reference] big photo.png"]]
    assert found["imported_after_reopen"] == [False, [0, 0, 1500, 1000]]
    rect = context_rect(box, canvas, edge_defaults(box))
    assert found["mode"] == "inpaint" and found["image_bounds"] == [rect.x, rect.y, rect.width, rect.height]
    assert rect.intersect(Rect(37, 21, 61, 43)).is_empty  # the photo lies wholly outside what the inpaint reads
    # Not cropped to the selection's region: the photo's own bounds, the picture whole and shrunk.
    assert found["sent"] == [["reference", 0.7, 0.1, 0.9, 61, 43], ["style", 0.6, 0.0, 1.0, 1024, 683]]
    assert found["photo_bounds"] == [37, 21, 61, 43] and found["photo_is_the_layer"]
    assert found["picture_difference"] < 1.0, found["picture_difference"]
    # The server read both, each with the installed adapter for the model's family.
    assert found["finished"] and "server_error" not in found and found["message"] == ""
    assert found["result_references"] == [["reference", "tiny-sd15-ip-adapter"], ["style", "tiny-sd15-ip-adapter"]]


@needs_strokes
def test_a_reference_layer_sends_the_brush_stroke_made_on_it_in_gui_krita(
        krita_home: KritaHome, plugin_server_url: str) -> None:
    """"Paint Layer 1" made a reference with the docker's Add layer, a real brush stroke on it, Generate:
    the request carries the layer exactly as the stroke left it, over the stroke's own bounds."""
    found = run_gui(krita_home, "gui_reference_stroke", plugin_server_url, model="tiny-sd15", size=[256, 192],
                    points=30, pause=0.02, steps=3, reach=0.05)
    assert "Traceback" not in found["log"] and "error" not in found, found.get("error") or found["log"][-3000:]
    assert found["connected"] and found["references"] == [["style", 0.6, "Paint Layer 1"]]
    assert found["ink_pixels"] > 200
    x, y, width, height = found["layer_bounds"]
    assert width < 256 and height < 192  # the stroke's bounds: a reference is not read over the canvas
    assert found["sent"] == [["style", 0.6, width, height, True]]
    assert found["message_after_click"] == ""
    assert "server_error" not in found and found["result_references"] == [["style", "tiny-sd15-ip-adapter"]]
    assert found["thumbnails"] == [True, True, True, True]  # the docker's thumbnail shows the stroke


@needs_gui
def test_docker_apply_and_one_undo_in_gui_krita(krita_home: KritaHome, plugin_server_url: str) -> None:
    found = run_gui(krita_home, "gui_apply_undo", plugin_server_url, model="tiny-sd15-inpaint",
                    preferences={"fill": "expand"}, fill="add")
    assert "Traceback" not in found["log"] and "Error" not in found["log"], found["log"][-3000:]
    assert found["url_at_start"] == plugin_server_url  # read from kritarc
    assert found["docker"] == ["UnderpaintDocker", "Underpaint"]
    assert found["connected"]
    assert "tiny-sd15-inpaint" in found["models_in_docker"]
    assert found["generate_label"] == "Inpaint selection"
    assert found["settings"] == ["tiny-sd15-inpaint", "a blue bird", 3, 4000000000]
    # The fill picker: every mode in words, auto first; the last session's choice is back, and a new
    # one goes into the request and into kritarc for the next start.
    assert found["fill_labels"][0] == "Auto" and len(found["fill_labels"]) == 6
    assert found["fill_at_start"] == "expand"
    assert found["request_fill"] == "add" and found["stored_fill"] == "add"
    assert found["finished"] and found["message"] == "" and found["thumbnails"] == 1
    assert found["active_layer"] == "Paint"
    assert found["active_layer_with_preview"] == "Paint"  # the preview layer does not take it over
    after = [n for n in found["layers_after_apply"] if n != "Selection Mask"]
    new = [n for n in after if n == "[Generated] a blue bird (4000000000)"]
    assert len(new) == 1 and after.index(new[0]) == after.index("Paint") + 1  # right above the active layer
    assert new[0] in found["applied_message"]
    assert found["artist_untouched"] == {"Background": True, "Paint": True, "Top": True}
    assert found["layers_after_undo"] == found["layers_before_apply"]  # one undo removes it
    assert found["artist_untouched_after_undo"] == {"Background": True, "Paint": True, "Top": True}
    # Live mode follows a stroke; Apply copies the live picture into a [Live] layer.
    assert found["live_on"] and found["live_first"] and found["live_after_stroke"], found["live_message"]
    live = [n for n in found["layers_after_live_apply"] if n.startswith("[Live] a blue bird (")]
    assert len(live) == 1


@needs_gui
def test_upscale_scales_the_canvas_and_undo_takes_it_back_in_gui_krita(krita_home: KritaHome,
                                                                      plugin_server_url: str) -> None:
    found = run_gui(krita_home, "gui_upscale_undo", plugin_server_url, model="tiny-sd15", size=[128, 96], scale=2)
    assert "Traceback" not in found["log"], found["log"][-3000:]
    assert found["connected"] and found["upscalers"][-1] == "Lanczos (no model)"
    assert found["request"] == {"mode": "upscale", "scale": 2, "upscaler": None}
    assert found["finished"] and found["scaled"], found["message"]
    assert found["size_after"] == [256, 192]
    # Krita scaled every layer (the red square on "Paint": 60x50 at 30, 40 -> 120x100 at 60, 80) ...
    assert found["bounds_before"]["Paint"] == [30, 40, 60, 50]
    assert found["bounds_after"]["Paint"] == [60, 80, 120, 100]
    # ... and the upscaled picture came in above them, the whole canvas, red where the square is.
    new = [n for n in found["layers_after"] if n.startswith("[Generated] upscaled x2")]
    assert new == ["[Generated] upscaled x2 a red square"] and new[0] in found["message"]
    assert found["bounds_after"][new[0]] == [0, 0, 256, 192]
    blue, green, red, alpha = found["result_pixel"]  # BGRA, inside the square
    assert red > 200 and green < 60 and blue < 60 and alpha == 255
    # Krita 5.1's scripting API cannot group commands: the layer is one undo step, the scaling another.
    first, second = found["undone"]
    assert first == {"size": [256, 192], "layers": [n for n in found["layers_after"] if n not in new]}
    assert second["size"] == [128, 96] and new[0] not in second["layers"]
    assert found["artist_untouched_after_undo"] == {"Background": True, "Paint": True, "Top": True}


@pytest.fixture(scope="module")
def default_layout(krita_home: KritaHome, adapters: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """GUI Krita in its default workspace with the docker, against a server whose model recommends
    its own settings (a sidecar file), with a style of the artist's in Krita's resource folder."""
    models = tmp_path_factory.mktemp("recommending") / "models"
    shutil.copytree(adapters / "checkpoints" / "tiny-sd15-inpaint", models / "checkpoints" / "tiny-sd15-inpaint")
    (models / "checkpoints" / "tiny-sd15-inpaint.json").write_text(
        json.dumps({"steps": 5, "cfg_scale": 4.5, "scheduler": "euler"}))
    shutil.copytree(adapters / "loras", models / "loras")
    styles = krita_home.data / "krita" / "underpaint" / "styles"
    shutil.rmtree(styles, ignore_errors=True)  # an earlier test's Krita made it, with the shipped styles
    styles.mkdir(parents=True)
    (styles / "lighthouse.json").write_text(json.dumps(
        {"name": "Lighthouse keeper", "prompt": "{prompt}, oil painting", "negative_prompt": "photo",
         "sampler": "euler_a", "cfg_scale": 5.5, "loras": [{"name": "tiny-sd15-lora", "strength": 0.5}]}))
    with ServerProcess(models, tmp_path_factory.mktemp("recommending-server")) as server:
        return run_gui(krita_home, "gui_docker_in_the_default_layout", server.url, style="Lighthouse keeper",
                       floating=[[320, 760], [240, 640]])


@needs_gui
def test_the_docker_fits_where_krita_docks_it_and_floated(default_layout: dict) -> None:
    """Docked in the right column under Layers and Brush Presets, at that column's width: no
    horizontal scrollbar, nothing beyond the visible width or squeezed, every label's text fits or
    wraps; with Live on too, and floated, wide and narrow."""
    found = default_layout
    assert "Traceback" not in found["log"], found["log"][-3000:]
    assert found["connected"] and found["right"]
    assert {"KisLayerBox", "PresetDocker"} <= set(found["below"]), found["below"]
    docked = found["states"]["docked"]
    assert docked["viewport"][0] < 300 and not docked["floating"]  # Krita's narrow right column
    for name, state in found["states"].items():
        assert state["problems"] == [], (name, state)
        assert Path(state["screenshot"]).stat().st_size > 0
    assert found["live_button"] == ["Live on", True]
    assert found["live_status"] == "Live: following your strokes"


@needs_gui
def test_the_models_settings_and_a_style_from_the_combo_shape_the_request_in_gui_krita(default_layout: dict) -> None:
    found = default_layout
    assert found["recommended_shown"] == [5, 4.5, "euler"]  # the model's sidecar file
    assert found["styles_folder"] == ["lighthouse.json"]  # read from Krita's resource folder
    # The style sets the sampler and CFG scale; the steps stay the model's.
    assert found["shown_with_style"] == [5, 5.5, "euler_a"]
    assert found["request"] == {"model": "tiny-sd15-inpaint", "prompt": "a lighthouse, oil painting "
                                "<lora:tiny-sd15-lora:0.5>", "negative_prompt": "fog, photo", "steps": 5,
                                "cfg_scale": 5.5, "scheduler": "euler_a"}
    assert found["message"] == "" and found["finished_message"] == ""


def _ink_difference(reference: bytes, other: bytes) -> float:
    """How much of the reference's ink (the alpha of 8-bit BGRA pixels) differs in `other`."""
    return sum(abs(a - b) for a, b in zip(reference[3::4], other[3::4], strict=True)) / sum(reference[3::4])


@needs_strokes
def test_strokes_are_whole_with_live_on_and_while_a_generate_runs_in_gui_krita(
        krita_home: KritaHome, plugin_server_url: str) -> None:
    """An artist's brush strokes, made with xdotool in GUI Krita, are the same with Live on and while
    a generate runs as with neither: Live never ends, cuts or redirects a stroke."""
    width, height = 640, 480
    found = run_gui(krita_home, "gui_strokes", plugin_server_url, model="tiny-sd15-inpaint",
                    cases=["off", "live", "generate"], size=[width, height], points=250, pause=0.02, steps=4,
                    generate_steps=8)
    assert "Traceback" not in found["log"], found["log"][-3000:]
    assert found["connected"] and "Basic-5" in found["preset"]
    cases = found["cases"]
    reference = Path(cases["off"]["pixels"]).read_bytes()
    assert sum(1 for a in reference[3::4] if a) > 0.1 * width * height  # the strokes landed on the layer
    for name in ("live", "generate"):
        case = cases[name]
        assert case["settled"] and case["message"] == "", case
        pixels = Path(case["pixels"]).read_bytes()
        assert _ink_difference(reference, pixels) <= INK_TOLERANCE, (name, _ink_difference(reference, pixels))
        # Never another active layer, tool or selection, also when the preview layer was added.
        assert case["after"] == case["before"] == {"active_layer": "Paint Layer 1",
                                                   "tool": ["KritaShape/KisToolBrush"], "selection": False}
        # The canvas is larger than the tiny model's native size: a generate's preview says it was
        # enlarged (live frames always are).
        preview = "[Preview] a spiral" + (" (enlarged: Detail fast)" if name == "generate" else "")
        assert case["layers"] == ["Background", "Paint Layer 1", preview]
        events = case["timeline"]
        strokes = _strokes(events)
        assert len(strokes) == 2, events
        # A picture arrived while the first stroke was painted (the scenario holds the button still
        # halfway until one does), and it was shown only after it; the second stroke began right
        # then, when Krita makes the new preview layer the active one.
        assert any(strokes[0][0] < t < strokes[0][1] for t, e in events if e == "picture received"), events
        shown = [t for t, e in events if e == "picture shown"]
        assert not any(start < t < end for t in shown for start, end in strokes), events
        assert shown[0] < strokes[1][0] < shown[0] + 1.0, events
    # Live reads the canvas only between strokes, and follows them: the frame after the last stroke
    # comes back and is shown.
    events = cases["live"]["timeline"]
    strokes = _strokes(events)
    sent = [t for t, e in events if e == "frame sent"]
    assert not any(start < t < end for t in sent for start, end in strokes), events
    assert any(t > strokes[-1][1] for t in sent), events


@pytest.fixture(scope="module")
def tiny_coder_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose SD1.5 model has a tiny autoencoder: its live frames are previews to finalize."""
    root = tmp_path_factory.mktemp("tiny-coder-models")
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", root / "checkpoints" / "tiny-sd15")
    tiny_autoencoder().save_pretrained(root / "vae-approx" / "taesd")
    with ServerProcess(root, tmp_path_factory.mktemp("tiny-coder-server")) as server:
        yield server


@needs_strokes
def test_apply_of_a_live_frame_gives_its_full_quality_picture_in_gui_krita(
        krita_home: KritaHome, tiny_coder_server: ServerProcess) -> None:
    """Live follows a real brush stroke; Apply of its picture asks the server to decode that frame's
    latents with the full VAE and adds what comes back, not the tiny autoencoder's preview."""
    found = run_gui(krita_home, "gui_live_apply", tiny_coder_server.url, model="tiny-sd15", size=[256, 192],
                    points=60, pause=0.02, steps=4)
    assert "Traceback" not in found["log"] and "error" not in found, found.get("error") or found["log"][-3000:]
    assert found["connected"] and found["stroke_shown"], found["timeline"]
    name = next(n for n in found["layers"] if n.startswith("[Live] a red circle ("))
    assert found["applying_message"] == f"Applying “{name}” at full quality…"
    assert found["message"] == f"Added the layer “{name}”."
    # The server finalized the frame shown: one full decode, written to its outputs like every result.
    jobs = tiny_coder_server.job_lines()
    assert [(j["id"], j["outcome"]) for j in jobs if j.get("finalize")] == [(found["frame_id"], "result")]
    newest = max((tiny_coder_server.folder / "outputs").rglob("*.png"), key=lambda p: int(p.stem.split("-")[2]))
    with PIL.Image.open(newest) as written:
        full_quality = written.convert("RGBA").tobytes()
    applied = Path(found["applied"]).read_bytes()
    applied_rgba = bytes(b for i in range(0, len(applied), 4) for b in (applied[i + 2], applied[i + 1],
                                                                        applied[i], applied[i + 3]))
    x, y, width, height = found["bounds"]
    assert (x, y, width, height) == (0, 0, 256, 192)
    assert applied_rgba == full_quality
    assert applied_rgba != Path(found["preview"]).read_bytes()  # not the tiny autoencoder's picture


@needs_strokes
def test_a_small_live_stroke_is_encoded_in_the_area_around_it_in_gui_krita(
        krita_home: KritaHome, tiny_coder_server: ServerProcess) -> None:
    """A short brush stroke on a larger canvas: the live frame after it encodes the area around the
    stroke only (docs/live.md), the first frame the whole canvas."""
    lines = len(tiny_coder_server.job_lines())
    found = run_gui(krita_home, "gui_live_apply", tiny_coder_server.url, model="tiny-sd15", size=[512, 384],
                    points=20, pause=0.02, steps=4, reach=0.03)
    assert "Traceback" not in found["log"] and "error" not in found, found.get("error") or found["log"][-3000:]
    assert found["connected"] and found["stroke_shown"], found["timeline"]
    frames = [j for j in tiny_coder_server.job_lines()[lines:] if j.get("session") and j["outcome"] == "result"]
    assert frames[0]["start_encode"] == "whole", frames
    shown = next(j for j in frames if j["id"] == found["frame_id"])
    assert shown["start_encode"] == "tiles", frames


def _strokes(events: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """(press, release) times from a scenario's timeline."""
    presses, releases = [t for t, e in events if e == "pressed"], [t for t, e in events if e == "released"]
    assert len(presses) == len(releases), events
    return list(zip(presses, releases, strict=True))


def _demo_model_installed() -> bool:
    from server.models.demo import MODEL_DIR

    return (MODEL_DIR / "model_index.json").is_file()


@needs_kritarunner
@pytest.mark.skipif(not _demo_model_installed(), reason="the demo model's weights are not installed")
def test_refined_whole_canvas_stays_red_with_the_demo_model(krita_home: KritaHome, tmp_path: Path) -> None:
    """No selection: the whole visible canvas goes out as img2img and comes back. The demo model's
    trained VAE keeps colours (the tiny test models' random one does not), so red must stay red."""
    from server.models.demo import NAME

    (tmp_path / "models").mkdir()
    server = ServerProcess(tmp_path / "models", tmp_path / "outputs")  # no models: it serves the demo
    server.start()
    try:
        found = run_scenario(krita_home, "refine_keeps_red", server=server.url, model=NAME, strength=0.3, steps=10)
    finally:
        server.kill()
    assert found["finished"] and found["message"] == ""
    assert found["pixels"] == 128 * 128
    assert found["mean_red"] > 150 and found["mean_blue"] < 100, found
