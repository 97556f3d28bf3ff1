"""Loading models: devices and dtypes, the resident-pipeline cache, single-file conversion, shipped configs."""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

from server.errors import RequestError
from server.models import registry
from server.models.loading import (
    CONFIGS,
    Acceleration,
    PipelineCache,
    config_dir,
    prepare,
    resolve_device,
    resolve_dtype,
)
from server.models.registry import Registry
from shared.errors import MODEL_BROKEN
from testing.tiny_models import tiny_pipeline

CPU = torch.device("cpu")
PIPELINE_CLASSES = {
    ("sd15", "regular"): "StableDiffusionPipeline",
    ("sd15", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sdxl", "regular"): "StableDiffusionXLPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
}
TINY = [
    f"tiny-{family}{'-inpaint' if variant == 'inpaint' else ''}{single}"
    for family in ("sd15", "sdxl")
    for variant in ("regular", "inpaint")
    for single in ("", "-single")
]


@pytest.fixture
def models(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setattr(registry, "embedded_entry", lambda: None)
    reg = Registry([models_dir])
    reg.scan()
    return reg


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device().type == expected
    assert resolve_device("cpu") == CPU
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda:0")


@pytest.mark.parametrize(
    ("name", "device", "bf16", "dtype"),
    [
        ("auto", "cpu", False, torch.float32),
        ("auto", "cuda", False, torch.float16),
        ("auto", "cuda", True, torch.bfloat16),
        ("auto", "mps", False, torch.float16),
        ("fp16", "cpu", False, torch.float16),
        ("fp16", "cuda", True, torch.float16),
        ("bfloat16", "cuda", False, torch.bfloat16),
        ("fp32", "cuda", True, torch.float32),
    ],
)
def test_resolve_dtype(name: str, device: str, bf16: bool, dtype: torch.dtype) -> None:
    assert resolve_dtype(name, torch.device(device), bf16) == dtype


@pytest.mark.parametrize(("family", "dtype", "vae_dtype"), [
    ("sdxl", torch.float16, torch.float32),  # SDXL's VAE overflows in float16
    ("sdxl", torch.bfloat16, torch.bfloat16),  # ... not in bfloat16, whose range is float32's
    ("sd15", torch.float16, torch.float16),
])
def test_prepared_for_the_gpu(family: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> None:
    pipe = tiny_pipeline(family).to(dtype=dtype)
    prepare(pipe, family, dtype, Acceleration(channels_last=True, compile=True))
    assert pipe.vae.dtype == vae_dtype and pipe.unet.dtype == dtype
    # Attention by PyTorch's scaled-dot-product kernel (flash / memory-efficient where the GPU has them).
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert isinstance(pipe.unet, torch._dynamo.eval_frame.OptimizedModule)  # compiled on its first call
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_resolve_dtype_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'int8' is not one of auto, fp16"):
        resolve_dtype("int8", CPU)


@pytest.mark.parametrize("name", TINY)
def test_cache_loads_folders_and_single_files(models: Registry, name: str) -> None:
    entry = models.get(name)
    cache = PipelineCache(CPU, torch.float32)
    pipe = cache.get(entry)
    assert type(pipe).__name__ == PIPELINE_CLASSES[(entry.family, entry.variant)]
    assert pipe.unet.config.in_channels == (9 if entry.variant == "inpaint" else 4)
    assert pipe.unet.device == CPU and pipe.unet.dtype == torch.float32
    assert getattr(pipe, "safety_checker", None) is None
    assert cache.get(entry) is pipe  # resident: not loaded again


def _generate(pipe, variant: str) -> np.ndarray:
    inputs = {}
    if variant == "inpaint":
        picture = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[16:48, 16:48] = 255
        inputs = {"image": PIL.Image.fromarray(picture), "mask_image": PIL.Image.fromarray(mask), "strength": 1.0}
    return pipe(
        "a photo of a cat",
        num_inference_steps=1,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **inputs,
    ).images[0]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("variant", ["regular", "inpaint"])
def test_single_file_gives_the_same_pictures_as_the_folder(models: Registry, family: str, variant: str) -> None:
    """The single files hold the same weights in the original layout: equal pictures prove the conversion."""
    name = f"tiny-{family}" + ("-inpaint" if variant == "inpaint" else "")
    cache = PipelineCache(CPU, torch.float32, capacity=2)
    folder = _generate(cache.get(models.get(name)), variant)
    single = _generate(cache.get(models.get(f"{name}-single")), variant)
    assert folder.std() > 0.01  # a real picture, not a constant
    np.testing.assert_allclose(single, folder, atol=1e-6)


def test_switching_models_frees_the_previous_one(models: Registry) -> None:
    cache = PipelineCache(CPU, torch.float32)
    first = weakref.ref(cache.get(models.get("tiny-sd15")).unet)
    second = cache.get(models.get("tiny-sdxl-single"))
    gc.collect()
    assert first() is None
    assert cache.get(models.get("tiny-sdxl-single")) is second


def test_capacity_keeps_the_most_recently_used(models: Registry) -> None:
    cache = PipelineCache(CPU, torch.float32, capacity=2)
    a = cache.get(models.get("tiny-sd15"))
    sdxl = weakref.ref(cache.get(models.get("tiny-sdxl")).unet)
    assert cache.get(models.get("tiny-sd15")) is a  # still resident: no reload
    inpaint = cache.get(models.get("tiny-sd15-inpaint"))
    gc.collect()
    assert sdxl() is None  # the least recently used went
    assert cache.get(models.get("tiny-sd15")) is a and cache.get(models.get("tiny-sd15-inpaint")) is inpaint
    with pytest.raises(ValueError, match="at least 1"):
        PipelineCache(CPU, torch.float32, capacity=0)


def test_a_file_that_fails_to_load_is_reported_and_marked_broken(models_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Identified as an SD1.5 checkpoint from its header, but most weights are missing."""
    monkeypatch.setattr(registry, "embedded_entry", lambda: None)
    source = models_dir / "checkpoints" / "tiny-sd15-single"
    shutil.copytree(source.with_suffix(".config"), tmp_path / "hollow.config")
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
            "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": torch.zeros(77, 32),
            "first_stage_model.encoder.conv_in.weight": torch.zeros(4, 3, 3, 3),
        },
        str(tmp_path / "hollow.safetensors"),
    )
    reg = Registry([tmp_path])
    reg.scan()
    cache = PipelineCache(CPU, torch.float32, on_broken=reg.mark_broken)
    hollow = reg.get("hollow")
    with pytest.raises(RequestError) as err:
        cache.get(hollow)
    assert (err.value.code, err.value.field) == (MODEL_BROKEN, "model")
    assert err.value.message.startswith("hollow could not be loaded: ")
    assert str(tmp_path) not in err.value.message
    with pytest.raises(RequestError, match="hollow could not be loaded"):  # nothing half-loaded was kept
        cache.get(hollow)
    with pytest.raises(RequestError) as again:
        reg.get("hollow")
    assert again.value.code == MODEL_BROKEN
    assert [e.refused for e in reg.entries()] == [err.value.message.removeprefix("hollow ")]


def test_single_files_use_their_own_config_folder_else_the_shipped_one(models: Registry, tmp_path: Path) -> None:
    tiny = models.get("tiny-sdxl-inpaint-single")
    assert config_dir(tiny) == tiny.path.with_suffix(".config")
    elsewhere = tmp_path / "real.safetensors"
    for entry, shipped in [
        (tiny, "sdxl-inpaint"),
        (models.get("tiny-sd15-single"), "sd15"),
        (models.get("tiny-sd15-inpaint-single"), "sd15-inpaint"),
    ]:
        moved = type(entry)(**{**entry.__dict__, "path": elsewhere})
        assert config_dir(moved) == CONFIGS / shipped


# --- the shipped configs -----------------------------------------------------------------------------

# Parameter counts of the published models (UNet, VAE, text encoder, second text encoder).
PARAMETERS = {
    "sd15": (859_520_964, 83_653_863, 123_060_480, None),
    "sd15-inpaint": (859_535_364, 83_653_863, 123_060_480, None),
    "sdxl": (2_567_463_684, 83_653_863, 123_060_480, 694_659_840),
    "sdxl-inpaint": (2_567_478_084, 83_653_863, 123_060_480, 694_659_840),
}


@pytest.mark.parametrize("name", PARAMETERS)
def test_shipped_configs_describe_the_published_models(name: str) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIGS / name
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINE_CLASSES[(name[:4], "inpaint" if "inpaint" in name else "regular")]
    with init_empty_weights():
        models = [
            UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet")),
            AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae")),
            CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder")),
        ]
        if (folder / "text_encoder_2").is_dir():
            config_2 = CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2")
            models.append(CLIPTextModelWithProjection(config_2))
    counts = tuple(sum(p.numel() for p in m.parameters()) for m in models)
    assert counts == tuple(n for n in PARAMETERS[name] if n is not None)


def test_shipped_configs_are_what_the_generator_writes() -> None:
    """server/models/configs is the committed output of tools/make_model_configs.py: the two must not drift apart."""
    from tools import make_model_configs

    for name, files in make_model_configs.families().items():
        written = {p.relative_to(CONFIGS / name).as_posix() for p in (CONFIGS / name).rglob("*.json")}
        assert written - {"tokenizer/vocab.json", "tokenizer_2/vocab.json"} == set(files)
        for rel, content in files.items():
            assert json.loads((CONFIGS / name / rel).read_text()) == content, f"{name}/{rel}"


@pytest.mark.parametrize("name", PARAMETERS)
def test_shipped_tokenizers_are_clip(name: str) -> None:
    from transformers import CLIPTokenizer

    for sub in ("tokenizer", "tokenizer_2"):
        if not (CONFIGS / name / sub).is_dir():
            continue
        tokenizer = CLIPTokenizer.from_pretrained(CONFIGS / name, subfolder=sub)
        assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
        assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert tokenizer("A Photo").input_ids == [49406, 320, 1125, 49407]
    if "sdxl" in name:
        # SDXL's second tokenizer pads with "!" (id 0), as OpenCLIP did in training.
        padded = CLIPTokenizer.from_pretrained(CONFIGS / name, subfolder="tokenizer_2")("cat", padding="max_length")
        assert padded.input_ids[3:] == [0] * 74


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_published_size_single_files_load_offline_with_the_shipped_configs(tmp_path: Path, name: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A random checkpoint of the real size and key layout (as A1111 / ComfyUI files have) loads through the
    shipped configs: every weight lands in place."""
    from types import SimpleNamespace

    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from testing.ldm_layout import original_state_dict

    monkeypatch.setattr(registry, "embedded_entry", lambda: None)
    folder = CONFIGS / name
    with init_empty_weights():
        shapes = SimpleNamespace(
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet")),
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder")),
        )
        if name == "sdxl":
            shapes.text_encoder_2 = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2")
            )
    gen = torch.Generator().manual_seed(0)
    tensors = {
        key: torch.randn(meta.shape, generator=gen, dtype=torch.float16)
        for key, meta in original_state_dict(shapes).items()
    }
    save_file(tensors, str(tmp_path / "published.safetensors"))
    del shapes

    reg = Registry([tmp_path])
    reg.scan()
    entry = reg.get("published")
    assert (entry.family, entry.variant, config_dir(entry)) == (name, "regular", folder)
    pipe = PipelineCache(CPU, torch.float16).get(entry)

    components = [pipe.unet, pipe.vae, pipe.text_encoder] + ([pipe.text_encoder_2] if name == "sdxl" else [])
    assert tuple(sum(p.numel() for p in c.parameters()) for c in components) == tuple(
        n for n in PARAMETERS[name] if n is not None
    )
    assert not any(p.is_meta for c in components for p in c.parameters())
    assert torch.equal(pipe.unet.conv_in.weight, tensors["model.diffusion_model.input_blocks.0.0.weight"])
    assert torch.equal(pipe.vae.decoder.conv_out.weight, tensors["first_stage_model.decoder.conv_out.weight"])
    if name == "sdxl":
        projection = tensors["conditioner.embedders.1.model.text_projection"]
        assert torch.equal(pipe.text_encoder_2.text_projection.weight, projection.T)
