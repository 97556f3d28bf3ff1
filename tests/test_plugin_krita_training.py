"""Training from the Train dialog inside real Krita (docs/plugin.md, "Train"): the layers and open
documents read as pictures to train on (kritarunner), and in GUI Krita a brush stroke, the dialog
adding the visible layers, a short training on a real server with the tiny models, and the new LoRA
in the LoRA menu.

Krita runs in a clean environment, as tests/test_plugin_krita.py describes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.krita import KRITA, KRITARUNNER, XVFB, KritaHome, run_gui, run_scenario
from testing.processes import ServerProcess

pytestmark = pytest.mark.krita

XDOTOOL = shutil.which("xdotool")
needs_kritarunner = pytest.mark.skipif(KRITARUNNER is None, reason="kritarunner is not installed")
needs_strokes = pytest.mark.skipif(KRITA is None or XVFB is None or XDOTOOL is None,
                                   reason="krita, Xvfb or xdotool is not installed")


@pytest.fixture(scope="module")
def krita_home(tmp_path_factory: pytest.TempPathFactory) -> KritaHome:
    return KritaHome(tmp_path_factory.mktemp("krita-home"))


@pytest.fixture(scope="module")
def training_server_url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of its own whose first models folder is empty: what it trains goes there, not among the
    tiny models other tests list."""
    trained = tmp_path_factory.mktemp("trained")
    with ServerProcess(trained, tmp_path_factory.mktemp("training-server"), "--models", str(models_dir)) as server:
        yield server.url


@needs_kritarunner
def test_the_visible_layers_of_a_painting_become_pictures_in_real_krita(krita_home: KritaHome) -> None:
    found = run_scenario(krita_home, "training_pictures", server="", side=128)
    assert found["active"] == "test"
    # The visible layers that hold pixels, bottom first: not the hidden one, not the empty "Top";
    # 256x192 shrunk to 128² pixels, the aspect kept.
    assert found["layers"] == [["Background", 147, 110, "rgba8"], ["Paint", 147, 110, "rgba8"]]
    assert found["paint_centre"] == [255, 0, 0, 255]  # Krita's BGRA came out RGBA
    assert found["paint_corner"][3] == 0  # the layer's own transparency
    # Not shrunk: the red square (60x50 at 30, 40) exactly where it is on the canvas.
    assert found["paint_whole"] == [256, 192, 60 * 50, [255, 0, 0, 255], [0, 0, 0, 0], [255, 0, 0, 255]]
    red, green, blue, alpha = found["deep_layer_centre"]  # a 16-bit layer, read from an 8-bit copy
    assert red > 240 and green < 15 and blue < 15 and alpha == 255
    assert found["deep_layer_depth_after"] == "U16"  # the artist's layer is not converted
    assert ["test", 147, 110] in found["documents"] and ["deep", 64, 64] in found["documents"]
    assert found["document_centre"] == [255, 0, 0, 255]  # the document as it looks
    red, green, blue, alpha = found["deep_centre"]  # a 16-bit document, through Krita's conversion
    assert red > 240 and green < 15 and blue < 15 and alpha == 255


@needs_strokes
def test_a_short_training_from_painted_layers_lands_in_the_lora_menu_in_gui_krita(
        krita_home: KritaHome, training_server_url: str) -> None:
    found = run_gui(krita_home, "gui_train_from_layers", training_server_url, model="tiny-sd15", size=[256, 192],
                    points=40, pause=0.01, trigger="zigzagart", subject="style", steps=4)
    assert found["connected"]
    assert "Traceback" not in found["log"], found["log"][-3000:]
    # The artist's stroke is on its layer, and the dialog's picture of that layer holds it.
    assert found["stroke_ink"] > 500
    assert found["pictures"] == ["Background", "Paint Layer 1", "Square"]
    ink = found["picture_ink"]
    assert ink["Background"] == 256 * 192  # the white background, whole
    # The canvas fits the training area: every picture as it is, every inked pixel of the stroke in it.
    request = found["request"]
    assert all(size == [256, 192] for size in found["picture_sizes"].values())
    assert ink["Paint Layer 1"] == found["stroke_ink"] and ink["Square"] == 40 * 30
    assert request == {"kind": "lora", "model": "tiny-sd15", "name": "zigzagart", "trigger": "zigzagart", "steps": 4,
                       "resolution": None,  # the server's own for the model
                       "captions": ["a drawing on Background", "a drawing on Paint Layer 1", "a drawing on Square"]}
    # The run, as the dialog shows it, and the new LoRA where the artist picks LoRAs.
    assert found["state"] == "done", found["message"]
    assert found["trained"] == "zigzagart" and "“zigzagart” is in the LoRA menu" in found["status"]
    assert found["progress"] == [4, 4] and found["losses"] and found["curve_points"] == len(found["losses"])
    # Listed with the family the trainer recorded and its trigger word.
    listed = [text for text in found["menu"] if text == "zigzagart · SD1.5 · zigzagart"]
    assert len(listed) == 1, found["menu"]
