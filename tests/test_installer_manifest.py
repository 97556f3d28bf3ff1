"""installer/models.json: the shipped model sets, and the checks every manifest passes."""

from __future__ import annotations

import copy
from pathlib import PurePosixPath

import pytest

from installer import InstallError
from installer.models import load_manifest, parse_manifest
from server.models.identify import control_kinds

SHA = "a" * 64
GOOD = {
    "files": [
        {
            "name": "A",
            "url": "https://example.com/a.safetensors",
            "sha256": SHA,
            "destination": "checkpoints/a.safetensors",
            "family": "sd15",
            "role": "checkpoint-artwork",
        }
    ],
    "sets": {"one": ["A"], "none": []},
}


def test_shipped_sets() -> None:
    manifest = load_manifest()
    assert {"minimal", "sdxl", "none"} <= set(manifest.sets)
    minimal = manifest.select(["minimal"])
    assert sorted((f.family, f.role) for f in minimal) == [
        ("sd15", "checkpoint-artwork"), ("sd15", "lora-live"), ("sd15", "tiny-autoencoder")]
    assert {f.family for f in manifest.select(["sdxl"])} == {"sdxl"}
    assert manifest.select(["none"]) == []
    # Sets may overlap; each file comes once.
    assert len(manifest.select(["minimal", "photo"])) == 4
    # Every set of models has its family's tiny autoencoder for live frames.
    for name, files in manifest.sets.items():
        families = {manifest.files[f].family for f in files if manifest.files[f].role.startswith("checkpoint")}
        tiny = {manifest.files[f].family for f in files if manifest.files[f].role == "tiny-autoencoder"}
        assert tiny == families, name


def test_shipped_files_go_where_the_server_looks() -> None:
    for file in load_manifest().files.values():
        assert file.url.startswith("https://huggingface.co/"), file.name
        folder = PurePosixPath(file.destination).parts[0]
        folders = {"checkpoint": "checkpoints", "lora": "loras", "embedding": "embeddings", "tiny": "vae-approx",
                   "controlnet": "controlnet", "annotator": "annotators", "ipadapter": "ipadapter",
                   "clip_vision": "clip_vision"}
        assert folder == folders[file.role.split("-")[0]]
    tiny = {f.destination: f.family for f in load_manifest().files.values() if f.role == "tiny-autoencoder"}
    assert tiny == {"vae-approx/taesd.safetensors": "sd15", "vae-approx/taesdxl.safetensors": "sdxl"}


def test_the_control_set_has_a_controlnet_for_each_kind_its_name_tells_the_server() -> None:
    controlnets = load_manifest().select(["control"])
    kinds = {f.role.removeprefix("controlnet-"): PurePosixPath(f.destination).stem for f in controlnets}
    assert sorted(kinds) == ["canny", "depth", "lineart", "pose", "scribble", "softedge", "tile"]
    for kind, stem in kinds.items():
        assert control_kinds(stem) == (kind,), stem


def test_the_reference_set_has_adapters_of_each_family_and_the_encoder_they_read_with() -> None:
    files = load_manifest().select(["reference"])
    adapters = sorted((f.family, f.role) for f in files if f.role.startswith("ipadapter"))
    assert adapters == [("sd15", "ipadapter-face"), ("sd15", "ipadapter-reference"), ("sd15", "ipadapter-reference"),
                        ("sdxl", "ipadapter-reference")]
    (encoder,) = [f for f in files if f.role.startswith("clip_vision")]
    assert encoder.destination.endswith(".safetensors")  # one file: the server ships the ViT-H/14 config
    assert all("face" in f.destination for f in files if f.role == "ipadapter-face")  # the name tells face


def test_unknown_set_names_the_choices() -> None:
    with pytest.raises(InstallError, match="no model set 'xl'") as caught:
        parse_manifest(GOOD).select(["xl"])
    assert caught.value.hint == "choose one of: one, none"


def changed(path: tuple, value: object) -> dict:
    data = copy.deepcopy(GOOD)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (changed(("files", 0, "sha256"), "ABC"), "files[0].sha256 must be 64 lowercase hex digits or null"),
        (changed(("files", 0, "sha256"), ""), "files[0].sha256 must be a non-empty string"),
        (changed(("files", 0, "sha256"), None), "files[0].note must say why the SHA-256 is not recorded"),
        (changed(("files", 0, "url"), "ftp://x"), "files[0].url must be an http(s) address"),
        (changed(("files", 0, "destination"), "../../.bashrc"), "files[0].destination must be a relative path"),
        (changed(("files", 0, "destination"), "/etc/passwd"), "files[0].destination must be a relative path"),
        (changed(("files", 0, "destination"), "a\\..\\..\\b"), "files[0].destination must be a relative path"),
        (changed(("files", 0, "role"), KeyError), "files[0].role must be a non-empty string"),
        ({**GOOD, "files": GOOD["files"] * 2}, "files[1].name 'A' is used twice"),
        (changed(("sets", "one"), ["A", "B"]), "sets.one names files the manifest lacks: B"),
        (changed(("sets", "one"), "A"), "sets.one must be a list of file names"),
        (changed(("sets",), KeyError), "sets must be an object"),
        ([], "the manifest must be an object"),
    ],
)
def test_bad_manifests_name_the_field(data: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_manifest(data)
    assert str(caught.value).startswith(message)


def test_a_file_without_a_recorded_sha256_says_why() -> None:
    data = changed(("files", 0, "sha256"), None)
    data["files"][0]["note"] = "not reachable when written"
    assert parse_manifest(data).files["A"].sha256 is None
