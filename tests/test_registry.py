"""Model discovery: what the registry finds in users' model folders and how names are looked up."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import sys
import threading
import tracemalloc
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from server.errors import RequestError
from server.models import identify, registry
from server.models.headers import MAX_HEADER
from server.models.identify import (
    HEADER_TOO_LARGE,
    NOT_REGULAR,
    PICKLE_REFUSED,
    UNREADABLE,
    identify_file,
    identify_folder,
    trigger_words,
)
from server.models.registry import Registry
from shared.errors import BAD_REQUEST, MODEL_BROKEN, UNKNOWN_MODEL
from shared.schema import to_wire
from testing.tiny_controlnets import tiny_controlnet

# name -> (kind, family, variant, format, refused)
FIXTURES = {
    "tiny-sd15": ("checkpoint", "sd15", "regular", "diffusers", None),
    "tiny-sd15-inpaint": ("checkpoint", "sd15", "inpaint", "diffusers", None),
    "tiny-sdxl": ("checkpoint", "sdxl", "regular", "diffusers", None),
    "tiny-sdxl-inpaint": ("checkpoint", "sdxl", "inpaint", "diffusers", None),
    "tiny-sd15-single": ("checkpoint", "sd15", "regular", "single_file", None),
    "tiny-sd15-inpaint-single": ("checkpoint", "sd15", "inpaint", "single_file", None),
    "tiny-sdxl-single": ("checkpoint", "sdxl", "regular", "single_file", None),
    "tiny-sdxl-inpaint-single": ("checkpoint", "sdxl", "inpaint", "single_file", None),
    "broken": ("checkpoint", None, None, "single_file", UNREADABLE),
    "old": ("checkpoint", None, None, "single_file", PICKLE_REFUSED),
    "tiny-sd15-lora": ("lora", "sd15", None, "single_file", None),
    "tiny-sdxl-lora": ("lora", "sdxl", None, "single_file", None),
    "tiny-sd15-embedding": ("embedding", "sd15", None, "single_file", None),
    "tiny-sdxl-embedding": ("embedding", "sdxl", None, "single_file", None),
}


@pytest.fixture
def no_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the shipped demo model out of scans that test what users' folders hold."""
    monkeypatch.setattr(registry, "embedded_entry", lambda: None)


def scanned(*folders: Path) -> Registry:
    reg = Registry(list(folders))
    reg.scan()
    return reg


def test_identifies_every_fixture(adapters: Path, no_demo: None) -> None:
    found = {e.name: (e.kind, e.family, e.variant, e.format, e.refused) for e in scanned(adapters).entries()}
    assert found == FIXTURES


def test_entries_sorted_and_checkpoints_usable_only(models_dir: Path, no_demo: None) -> None:
    reg = scanned(models_dir)
    keys = [(e.kind, e.name) for e in reg.entries()]
    assert keys == sorted(keys)
    assert {e.name for e in reg.checkpoints()} == {
        name for name, row in FIXTURES.items() if row[0] == "checkpoint" and row[4] is None
    }


def test_wire_form_has_no_paths(models_dir: Path, no_demo: None) -> None:
    for entry in scanned(models_dir).entries():
        wire = to_wire(entry.info())
        assert "path" not in wire
        assert str(models_dir) not in json.dumps(wire)
        assert set(wire) <= {"name", "kind", "family", "variant", "format", "refused", "embedded", "trigger_words",
                             "defaults", "kinds"}


class _TouchWhenUnpickled:
    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return Path.touch, (self.canary,)


def test_pickles_are_listed_refused_and_never_unpickled(tmp_path: Path, no_demo: None) -> None:
    canary = tmp_path / "unpickled"
    payload = pickle.dumps({"state_dict": _TouchWhenUnpickled(canary)})
    pickle.loads(payload)  # the canary works: unpickling creates the file
    assert canary.exists()
    canary.unlink()

    models = tmp_path / "models"
    for rel in ["checkpoints/a.ckpt", "checkpoints/b.pt", "loras/c.bin", "embeddings/d.pth", "e.ckpt"]:
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).write_bytes(payload)
    reg = scanned(models)

    assert {(e.name, e.kind, e.refused) for e in reg.entries()} == {
        ("a", "checkpoint", PICKLE_REFUSED),
        ("b", "checkpoint", PICKLE_REFUSED),
        ("c", "lora", PICKLE_REFUSED),
        ("d", "embedding", PICKLE_REFUSED),
        ("e", "checkpoint", PICKLE_REFUSED),
    }
    with pytest.raises(RequestError) as err:
        reg.get("a")
    assert (err.value.code, err.value.field) == (MODEL_BROKEN, "model")
    assert not canary.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"not a model at all" * 100, b"\xff" * 8 + b"{}"])
def test_unreadable_files_are_refused_and_others_still_work(tmp_path: Path, models_dir: Path, content: bytes,
                                                              no_demo: None) -> None:
    shutil.copy(models_dir / "checkpoints" / "tiny-sd15-single.safetensors", tmp_path / "good.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(content)
    reg = scanned(tmp_path)
    assert reg.get("good").family == "sd15"
    assert [e.refused for e in reg.entries() if e.name == "bad"] == [UNREADABLE]
    with pytest.raises(RequestError) as err:
        reg.get("bad")
    assert err.value.code == MODEL_BROKEN
    assert "bad" in err.value.message and "truncated" in err.value.message


def _copy_single(models_dir: Path, name: str, dest: Path) -> None:
    src = models_dir / "checkpoints" / f"{name}.safetensors"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest / src.name)


LAYOUTS = {
    # A1111: models/Stable-diffusion, models/Lora, and embeddings/ beside models/.
    "a1111": ("models/Stable-diffusion", "models/Lora", "embeddings"),
    # ComfyUI: everything under models/.
    "comfyui": ("models/checkpoints", "models/loras", "models/embeddings"),
    # A plain folder with our own sub-folder names.
    "plain": ("checkpoints", "loras", "embeddings"),
}


@pytest.mark.parametrize(
    ("layout", "point_at_models"), [("a1111", False), ("a1111", True), ("comfyui", False), ("comfyui", True),
                                    ("plain", False)]
)
def test_a1111_and_comfyui_folders_work_as_they_are(tmp_path: Path, adapters: Path, layout: str,
                                                     point_at_models: bool, no_demo: None) -> None:
    ckpt, lora, emb = LAYOUTS[layout]
    root = tmp_path / "app"
    _copy_single(adapters, "tiny-sdxl-single", root / ckpt / "sdxl")  # users sort models into sub-folders
    shutil.copytree(adapters / "checkpoints" / "tiny-sd15", root / ckpt / "tiny-sd15")
    shutil.copy(adapters / "loras" / "tiny-sd15-lora.safetensors", (root / lora).mkdir(parents=True) or root / lora)
    shutil.copy(adapters / "embeddings" / "tiny-sdxl-embedding.safetensors",
                (root / emb).mkdir(parents=True) or root / emb)

    given = root / "models" if point_at_models else root
    found = {(e.kind, e.name, e.family) for e in scanned(given).entries()}
    expected = {
        ("checkpoint", "tiny-sdxl-single", "sdxl"),
        ("checkpoint", "tiny-sd15", "sd15"),
        ("lora", "tiny-sd15-lora", "sd15"),
        ("embedding", "tiny-sdxl-embedding", "sdxl"),
    }
    if point_at_models and layout == "a1111":
        expected.remove(("embedding", "tiny-sdxl-embedding", "sdxl"))  # it lives outside models/
    assert found == expected


def test_pointing_at_an_apps_checkpoints_folder_searches_its_sub_folders(tmp_path: Path, models_dir: Path,
                                                                        no_demo: None) -> None:
    _copy_single(models_dir, "tiny-sd15-single", tmp_path / "Stable-diffusion" / "sd15" / "anime")
    _copy_single(models_dir, "tiny-sdxl-single", tmp_path / "plain" / "sub")
    assert [e.name for e in scanned(tmp_path / "Stable-diffusion", tmp_path / "plain").entries()] == [
        "tiny-sd15-single"  # a folder of any other name is searched at its top level only
    ]


def test_several_folders_and_overlaps_list_each_model_once(tmp_path: Path, models_dir: Path, no_demo: None) -> None:
    _copy_single(models_dir, "tiny-sd15-single", tmp_path / "one" / "checkpoints")
    _copy_single(models_dir, "tiny-sdxl-single", tmp_path / "two")
    reg = scanned(tmp_path / "one", tmp_path / "one" / "checkpoints", tmp_path / "two")
    assert [e.name for e in reg.entries()] == ["tiny-sd15-single", "tiny-sdxl-single"]


def test_same_name_in_two_folders_keeps_the_first(tmp_path: Path, models_dir: Path, no_demo: None) -> None:
    _copy_single(models_dir, "tiny-sd15-single", tmp_path / "first")
    _copy_single(models_dir, "tiny-sdxl-single", tmp_path / "second")
    (tmp_path / "second" / "tiny-sdxl-single.safetensors").rename(tmp_path / "second" / "tiny-sd15-single.safetensors")
    reg = scanned(tmp_path / "first", tmp_path / "second")
    assert [(e.name, e.family) for e in reg.entries()] == [("tiny-sd15-single", "sd15")]


def test_a_config_folder_beside_a_file_is_not_a_model(models_dir: Path, no_demo: None) -> None:
    names = {e.name for e in scanned(models_dir).entries()}
    assert not any(name.endswith(".config") for name in names)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../x", BAD_REQUEST),
        ("a/b", BAD_REQUEST),
        ("a\\b", BAD_REQUEST),
        ("..", BAD_REQUEST),
        ("", BAD_REQUEST),
        ("tiny-sd15/../tiny-sd15", BAD_REQUEST),
        ("nope", UNKNOWN_MODEL),
        ("tiny-sd15-lora", UNKNOWN_MODEL),  # a LoRA, not a checkpoint
        ("broken", MODEL_BROKEN),
    ],
)
def test_lookup_errors(models_dir: Path, name: str, code: str, no_demo: None) -> None:
    with pytest.raises(RequestError) as err:
        scanned(models_dir).get(name)
    assert (err.value.code, err.value.field) == (code, "model")
    if code == UNKNOWN_MODEL:
        assert repr(name) in err.value.message


def test_lookup_by_kind(adapters: Path, no_demo: None) -> None:
    reg = scanned(adapters)
    assert reg.get("tiny-sd15-lora", "lora").kind == "lora"
    assert reg.get("tiny-sdxl-embedding", "embedding").family == "sdxl"
    assert reg.get("tiny-sdxl-inpaint").variant == "inpaint"


def test_mark_broken_lasts_until_the_next_scan(models_dir: Path, no_demo: None) -> None:
    reg = scanned(models_dir)
    reg.mark_broken("tiny-sd15", "could not be loaded: bad weights")
    with pytest.raises(RequestError) as err:
        reg.get("tiny-sd15")
    assert err.value.code == MODEL_BROKEN and "bad weights" in err.value.message
    assert "tiny-sd15" not in {e.name for e in reg.checkpoints()}
    reg.scan()
    assert reg.get("tiny-sd15").refused is None


# --- identification from tensor names and shapes ------------------------------------------------

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
LABEL = "model.diffusion_model.label_emb.0.0.weight"
CLIP = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
SDXL_CLIP = "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"
SDXL_OPEN_CLIP = "conditioner.embedders.1.model.positional_embedding"
VAE = "first_stage_model.encoder.conv_in.weight"


def unet_in(channels: int) -> tuple[str, tuple[int, ...]]:
    return UNET_IN, (8, channels, 3, 3)


SD15 = dict([unet_in(4), (CLIP, (1,)), (VAE, (1,))])
SDXL = dict([unet_in(4), (LABEL, (1,)), (SDXL_CLIP, (1,)), (SDXL_OPEN_CLIP, (1,)), (VAE, (1,))])
KOHYA_SD15_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
KOHYA_SDXL_K = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"
PEFT_K = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"

# (tensors: name -> shape, folder kind) -> (kind, family, variant, refused contains)
IDENTIFY = [
    (SD15, "checkpoint", ("checkpoint", "sd15", "regular", None)),
    ({**SD15, **dict([unet_in(9)])}, "checkpoint", ("checkpoint", "sd15", "inpaint", None)),
    (SDXL, "checkpoint", ("checkpoint", "sdxl", "regular", None)),
    ({**SDXL, **dict([unet_in(9)])}, "checkpoint", ("checkpoint", "sdxl", "inpaint", None)),
    ({**SD15, **dict([unet_in(8)])}, "checkpoint", ("checkpoint", "sd15", None, "8 input channels")),
    # A checkpoint in loras/ is still a checkpoint: content decides.
    (SD15, "lora", ("checkpoint", "sd15", "regular", None)),
    (
        {unet_in(4)[0]: (8, 4, 3, 3), "cond_stage_model.model.token_embedding.weight": (1,), VAE: (1,)},
        "checkpoint",
        ("checkpoint", None, "regular", "2.x"),
    ),
    (
        {unet_in(4)[0]: (8, 4, 3, 3), LABEL: (1,), "conditioner.embedders.0.model.text_projection": (1,), VAE: (1,)},
        "checkpoint",
        ("checkpoint", "sdxl", "regular", "refiner"),
    ),
    ({k: v for k, v in SDXL.items() if k != VAE}, "checkpoint", ("checkpoint", "sdxl", "regular", "no VAE")),
    ({k: v for k, v in SD15.items() if k != CLIP}, "checkpoint", ("checkpoint", "sd15", "regular", "text encoder")),
    (
        {"model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale": (1,)},
        "checkpoint",
        ("checkpoint", None, None, "unsupported architecture"),
    ),
    ({"conv_in.weight": (1,), "down_blocks.0.resnets.0.conv1.weight": (1,)}, "checkpoint",
     ("checkpoint", None, None, "single diffusers component")),
    ({"something": (1,)}, "lora", ("lora", None, None, "not a Stable Diffusion")),
    ({KOHYA_SD15_K: (4, 768)}, "lora", ("lora", "sd15", None, None)),
    ({KOHYA_SDXL_K: (4, 2048)}, "lora", ("lora", "sdxl", None, None)),
    ({PEFT_K: (4, 2048)}, "checkpoint", ("lora", "sdxl", None, None)),
    ({PEFT_K: (4, 768)}, "lora", ("lora", "sd15", None, None)),
    ({PEFT_K: (4, 1024)}, "lora", ("lora", None, None, "2.x")),
    ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280)}, "lora",
     ("lora", "sdxl", None, None)),
    ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768)}, "lora",
     ("lora", "sd15", None, None)),
    ({"lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight": (4, 320)}, "lora", ("lora", "sdxl", None, None)),
    ({"lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a": (4, 320)}, "lora", ("lora", None, None, None)),
    ({"emb_params": (2, 768)}, "embedding", ("embedding", "sd15", None, None)),
    ({"string_to_param.*": (1, 768)}, "embedding", ("embedding", "sd15", None, None)),
    ({"emb_params": (2, 1024)}, "embedding", ("embedding", None, None, "2.x")),
    ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "checkpoint", ("embedding", "sdxl", None, None)),
]


@pytest.mark.parametrize(("version", "family"),
                         [("sd_v1", "sd15"), ("sdxl_base_v1-0", "sdxl"), ("sd_v2", None), ("", None)])
def test_a_lora_without_other_signs_of_its_family_is_told_by_the_trainers_record(tmp_path: Path, version: str,
                                                                                 family: str | None) -> None:
    path = tmp_path / "m.safetensors"
    save_file({KOHYA_SD15_K: torch.zeros(4, 128)}, str(path), metadata={"ss_base_model_version": version})
    assert identify_file(path, "lora").family == family


@pytest.mark.parametrize(("tensors", "hint", "expected"), IDENTIFY)
def test_identify_from_names_and_shapes(tmp_path: Path, tensors: dict, hint: str, expected: tuple) -> None:
    path = tmp_path / "m.safetensors"
    save_file({k: torch.zeros(shape, dtype=torch.float16) for k, shape in tensors.items()}, str(path))
    entry = identify_file(path, hint)
    kind, family, variant, refused = expected
    assert (entry.kind, entry.family, entry.variant, entry.format) == (kind, family, variant, "single_file")
    if refused is None:
        assert entry.refused is None
    else:
        assert refused in (entry.refused or "")


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, ()),
        ({"modelspec.trigger_phrase": "pixel art, 8bit ,, "}, ("pixel art", "8bit")),
        (
            {"ss_tag_frequency": json.dumps({"10_a": {"cat": 3, "dog": 5, " ": 9}, "5_b": {"cat": 4, "bird": 1}})},
            ("cat", "dog", "bird"),
        ),
        (
            {"modelspec.trigger_phrase": "zk style", "ss_tag_frequency": json.dumps({"x": {"cat": 3}})},
            ("zk style",),
        ),
        ({"ss_tag_frequency": json.dumps({"x": {f"t{i}": i for i in range(9)}})}, ("t8", "t7", "t6", "t5", "t4")),
        ({"ss_tag_frequency": "{not json"}, ()),
        ({"ss_tag_frequency": json.dumps(["a", "list"])}, ()),
        ({"ss_tag_frequency": json.dumps({"x": {"cat": "many"}})}, ()),
    ],
)
def test_trigger_words(metadata: dict[str, str], expected: tuple[str, ...]) -> None:
    assert trigger_words(metadata) == expected


def test_lora_trigger_words_come_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "loras" / "style.safetensors"
    path.parent.mkdir()
    save_file({KOHYA_SD15_K: torch.zeros(4, 768)}, str(path), metadata={"modelspec.trigger_phrase": "zk style"})
    entry = identify_file(path, "lora")
    assert entry.trigger_words == ("zk style",)
    assert entry.info().trigger_words == ["zk style"]


# --- diffusers folders ------------------------------------------------------------------------------


def diffusers_folder(root: Path, pipeline: str = "StableDiffusionPipeline", in_channels: int = 4,
                     cross_attention_dim: int = 768, weights: str = "diffusion_pytorch_model.safetensors",
                     text_encoder: list | None = None) -> Path:
    components = {
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": text_encoder or ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    }
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": pipeline, **components}))
    (root / "unet" / "config.json").write_text(
        json.dumps({"in_channels": in_channels, "cross_attention_dim": cross_attention_dim})
    )
    for component in components:
        (root / component).mkdir(exist_ok=True)
        (root / component / weights).write_bytes(b"")  # identification never opens weights
    return root


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ("sd15", "regular", None)),
        ({"in_channels": 9}, ("sd15", "inpaint", None)),
        ({"pipeline": "StableDiffusionXLPipeline", "cross_attention_dim": 2048}, ("sdxl", "regular", None)),
        ({"pipeline": "StableDiffusionXLInpaintPipeline", "in_channels": 9}, ("sdxl", "inpaint", None)),
        ({"weights": "diffusion_pytorch_model.fp16.safetensors"}, ("sd15", "regular", None)),
        ({"weights": "diffusion_pytorch_model.bin"}, ("sd15", "regular", "no .safetensors weights")),
        ({"cross_attention_dim": 1024}, (None, "regular", "2.x")),
        ({"in_channels": 8}, ("sd15", None, "8 input channels")),
        ({"pipeline": "FluxPipeline"}, (None, None, "FluxPipeline models are not supported")),
        ({"pipeline": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None]}, ("sdxl", "regular",
                                                                                          "refiners")),
    ],
)
def test_identify_diffusers_folder(tmp_path: Path, kwargs: dict, expected: tuple) -> None:
    entry = identify_folder(diffusers_folder(tmp_path / "model", **kwargs))
    family, variant, refused = expected
    assert (entry.name, entry.kind, entry.format, entry.family, entry.variant) == (
        "model", "checkpoint", "diffusers", family, variant
    )
    assert (entry.refused is None) if refused is None else (refused in (entry.refused or ""))


def test_unreadable_diffusers_configs_are_refused(tmp_path: Path) -> None:
    folder = diffusers_folder(tmp_path / "model")
    (folder / "model_index.json").write_text("{truncated")
    assert "cannot be read" in identify_folder(folder).refused


def test_names_with_dots_are_refused(tmp_path: Path, models_dir: Path, no_demo: None) -> None:
    shutil.copy(models_dir / "embeddings" / "tiny-sd15-embedding.safetensors", tmp_path / "v1..2.safetensors")
    (entry,) = scanned(tmp_path).entries()
    assert "rename" in entry.refused


# --- files that must not hold the scan up ------------------------------------------------------------


def scanned_within(seconds: float, *folders: Path) -> Registry:
    """A scan that must end within `seconds`; run in a thread so a hanging scan fails the test, not the suite."""
    reg = Registry(list(folders))
    scan = threading.Thread(target=reg.scan, daemon=True)
    scan.start()
    scan.join(seconds)
    assert not scan.is_alive(), f"the scan did not end within {seconds} s"
    return reg


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifos_named_like_model_files_are_refused_without_being_opened(tmp_path: Path, models_dir: Path,
                                                                     no_demo: None) -> None:
    shutil.copy(models_dir / "checkpoints" / "tiny-sd15-single.safetensors", tmp_path / "good.safetensors")
    os.mkfifo(tmp_path / "pipe.safetensors")
    (tmp_path / "loras").mkdir()
    os.mkfifo(tmp_path / "loras" / "pipe-lora.safetensors")
    folder = diffusers_folder(tmp_path / "folder-model")
    (folder / "unet" / "config.json").unlink()
    os.mkfifo(folder / "unet" / "config.json")
    (tmp_path / "vae-approx" / "taesd").mkdir(parents=True)
    os.mkfifo(tmp_path / "vae-approx" / "taesd" / "config.json")
    os.mkfifo(tmp_path / "vae-approx" / "taesd-file.safetensors")  # TAESD as a lone weights file
    (tmp_path / "upscale_models").mkdir()
    os.mkfifo(tmp_path / "upscale_models" / "pipe-upscaler.pth")
    reg = scanned_within(10, tmp_path)
    refused = {e.name: e.refused for e in reg.entries()}
    assert refused["pipe"] == NOT_REGULAR and refused["pipe-lora"] == NOT_REGULAR
    assert refused["pipe-upscaler"] == NOT_REGULAR
    assert "cannot be read" in refused["folder-model"]
    assert reg.get("good").family == "sd15"
    assert reg.tiny_autoencoder(reg.get("good")) is None


def over_cap_header(path: Path) -> None:
    """A safetensors file whose header is one byte over the cap (a long metadata value)."""
    header = json.dumps({"__metadata__": {"pad": ""}}).encode()
    header = json.dumps({"__metadata__": {"pad": "x" * (MAX_HEADER + 1 - len(header))}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def test_a_header_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    over_cap_header(tmp_path / "huge.safetensors")
    tracemalloc.start()
    try:
        entry = identify_file(tmp_path / "huge.safetensors")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert entry.refused == HEADER_TOO_LARGE
    assert peak < 256 * 1024  # the 16 MiB of JSON were never read, let alone parsed


@pytest.mark.parametrize("header", [
    {"t": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}},  # the data is missing
    {"t": {"dtype": "F16", "shape": [2], "data_offsets": [4, 0]}},
    {"t": {"dtype": "F16", "shape": [-2], "data_offsets": [0, 0]}},
    {"t": {"shape": [2], "data_offsets": [0, 0]}},
    {"t": [1, 2]},
    {"__metadata__": {"a": 1}},
    [1, 2, 3],
])
def test_headers_that_break_the_format_are_unreadable(tmp_path: Path, header) -> None:
    text = json.dumps(header).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(text)) + text)
    assert identify_file(tmp_path / "m.safetensors").refused == UNREADABLE


def test_a_file_that_cannot_be_read_in_time_is_refused_and_the_scan_goes_on(
        tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch, no_demo: None) -> None:
    # A read that never returns, as from a network drive that stopped answering.
    shutil.copy(models_dir / "checkpoints" / "tiny-sd15-single.safetensors", tmp_path / "good.safetensors")
    (tmp_path / "stuck.safetensors").write_bytes(b"")
    released = threading.Event()
    read = identify.safetensors_header

    def stuck(path: Path):
        if path.name == "stuck.safetensors":
            released.wait(60)
        return read(path)

    monkeypatch.setattr(identify, "safetensors_header", stuck)
    monkeypatch.setattr(registry, "READ_TIMEOUT", 0.5)
    try:
        reg = scanned_within(5, tmp_path)
    finally:
        released.set()
    refused = {e.name: e.refused for e in reg.entries()}
    assert refused == {"good": None, "stuck": registry.SLOW}


def test_a_rescan_reads_only_the_files_that_changed(tmp_path: Path, models_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch, no_demo: None) -> None:
    for name in ("a", "b"):
        shutil.copy(models_dir / "checkpoints" / "tiny-sd15-single.safetensors", tmp_path / f"{name}.safetensors")
    reads: list[str] = []
    read = identify.safetensors_header
    monkeypatch.setattr(identify, "safetensors_header", lambda path: (reads.append(path.name), read(path))[1])
    reg = scanned(tmp_path)
    assert sorted(reads) == ["a.safetensors", "b.safetensors"]
    reads.clear()
    reg.scan()
    assert reads == []
    over_cap_header(tmp_path / "b.safetensors")
    reg.scan()
    assert reads == ["b.safetensors"]
    assert {e.name: e.refused for e in reg.entries()} == {"a": None, "b": HEADER_TOO_LARGE}



def test_a_rescan_reads_a_diffusers_folder_again_only_when_it_changed(
        tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch, no_demo: None) -> None:
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", tmp_path / "folder")
    reads: list[str] = []
    read = identify.read_json
    monkeypatch.setattr(identify, "read_json", lambda path: (reads.append(path.name), read(path))[1])
    reg = scanned(tmp_path)
    assert reads == ["model_index.json", "config.json"]
    reads.clear()
    reg.scan()
    assert reads == []
    for weights in (tmp_path / "folder" / "vae").glob("*.safetensors"):
        weights.unlink()
    reg.scan()
    assert reads == ["model_index.json", "config.json"]
    (entry,) = reg.entries()
    assert entry.refused.startswith("has no .safetensors weights for vae")


# --- the embedded demo model ------------------------------------------------------------------------


@pytest.fixture
def fake_demo(monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    demo = types.ModuleType("server.models.demo")
    demo.NAME = "demo"
    demo.MODEL_DIR = models_dir / "checkpoints" / "tiny-sd15"
    monkeypatch.setitem(sys.modules, "server.models.demo", demo)


def test_demo_is_offered_when_no_checkpoint_is_usable(tmp_path: Path, models_dir: Path, fake_demo: None) -> None:
    shutil.copy(models_dir / "checkpoints" / "old.ckpt", tmp_path)
    reg = scanned(tmp_path)
    (demo,) = reg.checkpoints()
    assert (demo.name, demo.embedded, demo.family, demo.format) == ("demo", True, "sd15", "diffusers")
    assert demo.info().embedded is True
    assert reg.get("demo") == demo


def test_demo_is_not_offered_beside_a_usable_checkpoint(tmp_path: Path, models_dir: Path, fake_demo: None) -> None:
    _copy_single(models_dir, "tiny-sdxl-single", tmp_path)
    assert [e.name for e in scanned(tmp_path).checkpoints()] == ["tiny-sdxl-single"]


def test_missing_demo_is_tolerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "server.models.demo", None)  # import fails like an absent module
    assert scanned(tmp_path).entries() == []
    demo = types.ModuleType("server.models.demo")
    demo.NAME, demo.MODEL_DIR = "demo", tmp_path / "not-trained-yet"
    monkeypatch.setitem(sys.modules, "server.models.demo", demo)
    assert scanned(tmp_path).entries() == []


@pytest.fixture
def demo_controlnets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_demo: None) -> Path:
    """The fake demo model with a ControlNets folder holding one scribble ControlNet."""
    folder = tmp_path / "demo-controlnets"
    tiny_controlnet("sd15").save_pretrained(folder / "demo-scribble", safe_serialization=True)
    monkeypatch.setattr(sys.modules["server.models.demo"], "CONTROLNET_DIR", folder, raising=False)
    return folder


def test_demo_controlnets_are_offered_with_the_demo(tmp_path: Path, demo_controlnets: Path) -> None:
    reg = scanned(tmp_path / "empty")
    (net,) = [e for e in reg.entries() if e.kind == "controlnet"]
    assert (net.name, net.family, net.kinds, net.embedded, net.refused) == ("demo-scribble", "sd15", ("scribble",),
                                                                            True, None)
    assert net.path == demo_controlnets / "demo-scribble"
    assert reg.get("demo-scribble", "controlnet") == net
    assert [e.name for e in reg.checkpoints()] == ["demo"]


def test_demo_controlnets_are_not_offered_beside_a_usable_checkpoint(tmp_path: Path, models_dir: Path,
                                                                     demo_controlnets: Path) -> None:
    _copy_single(models_dir, "tiny-sdxl-single", tmp_path)
    assert [e.name for e in scanned(tmp_path).entries()] == ["tiny-sdxl-single"]


def test_a_users_controlnet_of_the_same_name_comes_first(tmp_path: Path, demo_controlnets: Path) -> None:
    tiny_controlnet("sd15", seed=1).save_pretrained(tmp_path / "controlnet" / "demo-scribble")
    (net,) = [e for e in scanned(tmp_path).entries() if e.kind == "controlnet"]
    assert (net.path, net.embedded) == (tmp_path / "controlnet" / "demo-scribble", False)
