"""The settings each checkpoint recommends (server/models/defaults.py): a sidecar file beside it, its
own metadata, else its family; a bad sidecar never costs more than the values it got wrong."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from server.models import registry
from server.models.defaults import FAMILY, SIDECAR_BYTES, checked, read_sidecar, recommended, sidecar_path
from server.models.registry import Registry, embedded_entry
from shared import codec
from shared.messages import ModelDefaults, ModelInfo, Welcome


@pytest.fixture
def no_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "embedded_entry", lambda: None)


def _scan(*folders: Path) -> dict[str, ModelInfo]:
    found = Registry(list(folders))
    found.scan()
    return {entry.name: entry.info() for entry in found.entries()}


def _single_file(models_dir: Path, dest: Path, name: str, metadata: dict[str, str]) -> Path:
    """A copy of the tiny SD1.5 single-file checkpoint named `name`, with `metadata` in its header."""
    source = models_dir / "checkpoints" / "tiny-sd15-single.safetensors"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name}.safetensors"
    save_file(load_file(str(source)), str(path), metadata={"format": "pt", **metadata})
    return path


def test_each_family_has_its_defaults_and_a_folder_its_own_native_size(models_dir: Path, no_demo: None) -> None:
    found = _scan(models_dir)
    single = found["tiny-sd15-single"].defaults
    assert single == FAMILY["sd15"] and single.width == 512
    assert found["tiny-sdxl-single"].defaults == FAMILY["sdxl"] and FAMILY["sdxl"].width == 1024
    # A diffusers folder says its size in its UNet's and VAE's configs: 32 latent pixels, a VAE of 4
    # blocks (8 pixels per latent pixel), as the server's native size reads it.
    folder = found["tiny-sd15"].defaults
    assert (folder.width, folder.height) == (256, 256)
    assert (folder.cfg_scale, folder.steps, folder.scheduler) == (7.0, 20, "dpmpp_2m")
    # LoRAs, embeddings and refused files recommend nothing.
    assert found["broken"].defaults is None and found["old"].defaults is None


def test_the_demo_model_says_cfg_3() -> None:
    """docs/demo-model.md: CFG 3 scores best; it was trained at 128 px and evaluated with 20 Euler steps."""
    entry = embedded_entry()
    if entry is None:
        pytest.skip("the demo model's weights are not installed")
    assert recommended(entry) == ModelDefaults(cfg_scale=3.0, steps=20, scheduler="euler", width=128, height=128)


def test_metadata_then_sidecar_each_setting_from_the_first_that_names_it(
        tmp_path: Path, models_dir: Path, no_demo: None) -> None:
    folder = tmp_path / "checkpoints"
    _single_file(models_dir, folder, "wide", {"modelspec.resolution": "768x512"})
    _single_file(models_dir, folder, "tuned", {"modelspec.resolution": "768x512"})
    (folder / "tuned.json").write_text(json.dumps({"cfg_scale": 4.5, "steps": 8, "scheduler": "lcm", "width": 640}))
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", folder / "painterly")
    (folder / "painterly.json").write_text('{"cfg_scale": 5, "description": "A1111 keeps notes here too"}')
    found = _scan(tmp_path)
    assert found["wide"].defaults == ModelDefaults(7.0, 20, "dpmpp_2m", 768, 512)
    assert found["tuned"].defaults == ModelDefaults(4.5, 8, "lcm", 640, 512)
    assert found["painterly"].defaults == ModelDefaults(5.0, 20, "dpmpp_2m", 256, 256)
    assert sidecar_path(folder / "painterly") == folder / "painterly.json"
    assert sidecar_path(folder / "tuned.safetensors") == folder / "tuned.json"


@pytest.mark.parametrize(("metadata", "expected"), [
    ("1024x1024", (1024, 1024)), (" 832 × 1216 ", (832, 1216)), ("huge", (512, 512)), ("99999x512", (512, 512)),
    ("16x16", (512, 512)),
])
def test_metadata_resolution(tmp_path: Path, models_dir: Path, metadata: str, expected: tuple[int, int],
                             no_demo: None) -> None:
    _single_file(models_dir, tmp_path / "checkpoints", "m", {"modelspec.resolution": metadata})
    defaults = _scan(tmp_path)["m"].defaults
    assert (defaults.width, defaults.height) == expected


@pytest.mark.parametrize(("data", "kept", "logged"), [
    ({"cfg_scale": 3, "steps": 25}, ModelDefaults(cfg_scale=3.0, steps=25), []),
    ({"cfg_scale": 99, "steps": 25}, ModelDefaults(steps=25), ["cfg_scale"]),
    ({"steps": 0, "width": 7, "height": "tall"}, ModelDefaults(), ["steps", "width", "height"]),
    ({"steps": True, "cfg_scale": float("nan")}, ModelDefaults(), ["cfg_scale", "steps"]),
    ({"scheduler": "warp_drive", "steps": 12}, ModelDefaults(steps=12), ["scheduler"]),
    ({"scheduler": "x" * 5000}, ModelDefaults(), ["scheduler"]),
    ({"activation text": "oil", "preferred weight": 0.8}, ModelDefaults(), []),
])
def test_bad_values_are_ignored_with_a_log_line_and_the_rest_kept(
        data: dict, kept: ModelDefaults, logged: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="server.models.defaults"):
        assert checked(data, "m.json: ") == kept
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(logged) and all(f"m.json: ignored {name}" in line for name, line in
                                             zip(logged, lines, strict=True)), lines


@pytest.mark.parametrize(("content", "why"), [
    (b"[1, 2]", "not a JSON object"), (b"{not json", "not JSON"), (b"\xff\xfe{}", "not JSON"),
    (b'{"steps": 4, "pad": "' + b"x" * SIDECAR_BYTES + b'"}', "larger than 64 KiB"),
])
def test_unusable_sidecars_are_ignored_whole(tmp_path: Path, content: bytes, why: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "m.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="server.models.defaults"):
        assert read_sidecar(path) == ModelDefaults()
    assert any(why in r.getMessage() for r in caplog.records), caplog.text


def test_a_sidecar_that_is_no_regular_file_is_not_opened(tmp_path: Path) -> None:
    """A FIFO would block a read until someone writes to it; a folder is no file either."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    (tmp_path / "folder.json").mkdir()
    result: list[ModelDefaults] = []
    reader = threading.Thread(target=lambda: result.extend(read_sidecar(p) for p in (fifo, tmp_path / "folder.json")))
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "reading a FIFO sidecar blocked"
    assert result == [ModelDefaults(), ModelDefaults()]
    assert read_sidecar(tmp_path / "missing.json") == ModelDefaults()


def test_defaults_travel_in_welcome_and_a_newer_servers_extra_fields_are_skipped() -> None:
    info = ModelInfo(name="m", kind="checkpoint", family="sd15", defaults=ModelDefaults(3.0, 20, "euler", 128, 128))
    welcome = Welcome(server="s", device="cpu", models=[info, ModelInfo(name="old", kind="checkpoint")],
                      schedulers=["euler"])
    assert codec.decode_server(codec.encode(welcome)) == welcome
    import msgpack

    body = msgpack.unpackb(codec.encode(welcome))
    body["models"][0]["defaults"]["clip_skip"] = 2  # a recommendation this client does not know
    assert codec.decode_server(msgpack.packb(body)).models[0].defaults == info.defaults
