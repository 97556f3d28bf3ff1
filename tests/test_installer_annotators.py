"""The shipped `annotators` set, installed from a host on 127.0.0.1 that answers as the Hugging Face hub
does (a git blob id for the JSON files, a stated SHA-256 for the Git LFS weights) or from an offline
folder, lands where the server's depth and pose preprocesses find and load it."""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.parse
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from test_installer_download import FAST, FileServer, git_blob, quiet, server  # noqa: F401

from installer.download import VerifiedRecord
from installer.models import RECORD_NAME, ModelFile, install_models, load_manifest
from server.models.annotators import depth
from server.models.annotators.folders import find
from server.models.annotators.kept import Annotators
from testing.tiny_controlnets import write_tiny_depth_model, write_tiny_person_detector, write_tiny_pose_model

FOLDER = "annotators/Depth-Anything-V2-Small-hf"
FOLDERS = ("Depth-Anything-V2-Small-hf", "rtdetr_r50vd_coco_o365", "vitpose-base-simple")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Depth Anything, ViTPose and RT-DETR written as transformers writes the real ones, each in a
    folder named as the set places it: the files the set fetches."""
    root = tmp_path_factory.mktemp("hub")
    write_tiny_depth_model(root / "Depth-Anything-V2-Small-hf")
    write_tiny_pose_model(root / "vitpose-base-simple")
    write_tiny_person_detector(root / "rtdetr_r50vd_coco_o365")
    return root


def annotator_set() -> list[ModelFile]:
    files = load_manifest().select(["annotators"])
    assert sorted(f.destination for f in files) == [
        f"annotators/{folder}/{name}" for folder in FOLDERS
        for name in ("config.json", "model.safetensors", "preprocessor_config.json")]
    return files


def served_as_the_hub_does(host: FileServer, files: list[ModelFile], hub: Path) -> list[ModelFile]:
    """The files at their hub paths on the loopback host; the list's entries pointed at it."""
    moved = []
    for file in files:
        path = urllib.parse.urlsplit(file.url).path
        data = (hub / PurePosixPath(file.destination).relative_to("annotators")).read_bytes()
        host.files[path] = data
        if path.endswith(".safetensors"):
            host.stated[path] = hashlib.sha256(data).hexdigest()  # Git LFS
        else:
            host.etags[path] = f'"{git_blob(data)}"'  # kept in git itself
        moved.append(dataclasses.replace(file, url=host.url(path)))
    return moved


def test_the_set_installs_where_the_depth_and_pose_preprocesses_find_and_load_it(
        server: FileServer, tmp_path: Path, hub: Path) -> None:  # noqa: F811
    files = served_as_the_hub_does(server, annotator_set(), hub)
    models, log = tmp_path / "models", []
    assert install_models(files, models, log=log.append, progress=quiet, **FAST) == []
    assert sorted(log)[:3] == [
        "  Depth Anything V2 Small: config.json: downloaded, checked against the git blob id its host states",
        "  Depth Anything V2 Small: model.safetensors: downloaded, checked against the SHA-256 its host states",
        "  Depth Anything V2 Small: preprocessor_config.json: downloaded, checked against the git blob id its "
        "host states",
    ]
    assert len(log) == len(files)
    record = VerifiedRecord(models / RECORD_NAME)
    for folder in FOLDERS:
        for source in (hub / folder).iterdir():
            placed = models / "annotators" / folder / source.name
            assert placed.read_bytes() == source.read_bytes()
            assert record.recorded_sha256(placed) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert find([models], depth.MODEL_TYPES) == models / FOLDER
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    annotators = Annotators([models], torch.device("cpu"), torch.float32)
    made, info = annotators.depth(rgb)
    assert made.shape == (40, 60, 3) and made.dtype == np.uint8 and info["model"] == "Depth-Anything-V2-Small-hf"
    made, info = annotators.pose(rgb)
    assert made.shape == (40, 60, 3) and made.any()
    assert (info["model"], info["detector"]) == ("vitpose-base-simple", "rtdetr_r50vd_coco_o365")


def test_a_tampered_config_is_refused_and_the_folder_stays_unfound(
        server: FileServer, tmp_path: Path, hub: Path) -> None:  # noqa: F811
    files = served_as_the_hub_does(server, annotator_set(), hub)
    config = next(f for f in files if f.destination == f"{FOLDER}/config.json")
    path = urllib.parse.urlsplit(config.url).path
    server.files[path] = server.files[path].replace(b"depth_anything", b"depth_anythin2")
    models = tmp_path / "models"
    (failure,) = install_models(files, models, log=lambda _: None, progress=quiet, **FAST)  # the others install
    assert failure.file == config and "gave a file with git blob id" in failure.reason
    assert not (models / FOLDER / "config.json").exists()
    assert find([models], depth.MODEL_TYPES) is None


def test_an_offline_folder_supplies_the_folder_by_its_name(tmp_path: Path, hub: Path) -> None:
    offline = tmp_path / "usb stick"
    # Another model's config.json, found first by its name alone, must not be taken for this one's.
    (offline / "A other model").mkdir(parents=True)
    (offline / "A other model" / "config.json").write_text('{"model_type": "bert"}')
    for folder in FOLDERS:
        (offline / "downloads" / folder).mkdir(parents=True)
        for source in (hub / folder).iterdir():
            (offline / "downloads" / folder / source.name).write_bytes(source.read_bytes())
    models = tmp_path / "models"
    assert install_models(annotator_set(), models, offline_dir=offline, log=lambda _: None, progress=quiet) == []
    for folder in FOLDERS:
        assert ((models / "annotators" / folder / "config.json").read_bytes() ==
                (hub / folder / "config.json").read_bytes())
    assert find([models], depth.MODEL_TYPES) == models / FOLDER
    # A file missing from the folder is named with its folder, as it is looked for.
    (offline / "downloads" / "Depth-Anything-V2-Small-hf" / "preprocessor_config.json").unlink()
    (models / FOLDER / "preprocessor_config.json").unlink()
    (failure,) = install_models(annotator_set(), models, offline_dir=offline, log=lambda _: None, progress=quiet)
    assert "(Depth-Anything-V2-Small-hf/preprocessor_config.json) is not in" in failure.reason
