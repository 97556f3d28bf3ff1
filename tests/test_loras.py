"""LoRAs and embeddings through the real server: <lora:name:weight> tags, kohya and diffusers files,
trigger words, switching off without a trace, errors before queueing."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from server.config import ServerConfig
from shared.client import Client, ServerError
from shared.messages import Error, Generate, Mask, Progress, Queued, Region
from testing.serving import running_server, url
from testing.tiny_models import TEXT_HIDDEN, tiny_pipeline


def write_kohya_lora(path: Path, tags: dict[str, int]) -> None:
    """An SD1.5 LoRA in kohya's layout (lora_unet_* / lora_te_*, lora_down / lora_up / alpha), with
    the tag counts kohya's trainer writes into the metadata."""
    pipe = tiny_pipeline("sd15")
    gen = torch.Generator().manual_seed(3)
    tensors: dict[str, torch.Tensor] = {}

    def add(prefix: str, layer: torch.nn.Linear, rank: int = 4) -> None:
        tensors[f"{prefix}.lora_down.weight"] = torch.randn(rank, layer.in_features, generator=gen) * 0.3
        tensors[f"{prefix}.lora_up.weight"] = torch.randn(layer.out_features, rank, generator=gen) * 0.3
        tensors[f"{prefix}.alpha"] = torch.tensor(float(rank))

    for name, layer in pipe.unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            add("lora_unet_" + name.replace(".", "_"), layer)
    for name, layer in pipe.text_encoder.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")):
            full = name if name.startswith("text_model.") else f"text_model.{name}"
            add("lora_te_" + full.replace(".", "_"), layer)
    save_file(tensors, str(path), metadata={"ss_tag_frequency": json.dumps({"10_grain": tags})})


@pytest.fixture(scope="module")
def library(adapters, tmp_path_factory) -> Path:
    """A models folder of its own (the session's is shared): two models, four LoRAs, an embedding."""
    root = tmp_path_factory.mktemp("library")
    for name in ("tiny-sd15", "tiny-sdxl"):
        shutil.copytree(adapters / "checkpoints" / name, root / "checkpoints" / name)
    loras = root / "loras"
    loras.mkdir()
    shutil.copy(adapters / "loras" / "tiny-sd15-lora.safetensors", loras / "ink.safetensors")
    shutil.copy(adapters / "loras" / "tiny-sdxl-lora.safetensors", loras / "xl ink.safetensors")
    write_kohya_lora(loras / "grain.safetensors", {"film grain": 40, "photo": 12, " ": 3})
    # A LoRA whose first down-projection does not fit the model: it fails halfway through loading.
    tensors = load_file(str(loras / "ink.safetensors"))
    first = min(k for k in tensors if k.startswith("unet") and "lora_A" in k)
    tensors[first] = torch.zeros(tensors[first].shape[0], tensors[first].shape[1] + 3)
    save_file(tensors, str(loras / "misfit.safetensors"))
    (root / "embeddings").mkdir()
    vectors = torch.randn(3, TEXT_HIDDEN, generator=torch.Generator().manual_seed(5))
    save_file({"emb_params": vectors}, str(root / "embeddings" / "PaperStyle.safetensors"))
    return root


@pytest.fixture(scope="module")
def server(library, tmp_path_factory):
    with running_server(ServerConfig(models=[library], outputs=tmp_path_factory.mktemp("outputs"))) as running:
        yield running


def request(prompt: str, **fields) -> Generate:
    defaults = {"id": uuid.uuid4().hex, "mode": "txt2img", "model": "tiny-sd15", "width": 64, "height": 64,
                "steps": 2, "seed": 1}
    return Generate(prompt=prompt, **{**defaults, **fields})


def pixels(client: Client, prompt: str, **fields) -> bytes:
    return client.generate(request(prompt, **fields)).images[0].image.data


def refusal(client: Client, message: Generate) -> Error:
    """The error for `message`, which must come before the job is queued."""
    client.send(message)
    for reply in client.messages(timeout=30):
        assert not isinstance(reply, (Queued, Progress)), "refused only after queueing"
        if isinstance(reply, Error):
            return reply


def test_models_lists_loras_and_embeddings_with_family_and_trigger_words(client):
    models = {(m.kind, m.name): m for m in client.welcome.models}
    assert models[("lora", "ink")].family == "sd15"
    assert models[("lora", "xl ink")].family == "sdxl"
    assert models[("lora", "grain")].family == "sd15"
    assert models[("lora", "grain")].trigger_words == ["film grain", "photo"]
    assert models[("embedding", "PaperStyle")].family == "sd15"


def test_lora_changes_the_picture_and_leaves_no_trace(library, tmp_path):
    # A server of its own, so "before" really is before any LoRA was loaded into the model.
    with running_server(ServerConfig(models=[library], outputs=tmp_path)) as fresh, Client(url(fresh)) as client:
        before = pixels(client, "a red circle")
        result = client.generate(request("a red circle <lora:ink:0.8>"))
        assert result.images[0].image.data != before
        assert result.info["loras"] == [{"name": "ink", "weight": 0.8}]
        assert result.info["prompt"] == "a red circle <lora:ink:0.8>"
        after = client.generate(request("a red circle"))
        assert after.images[0].image.data == before and after.info["loras"] == []
        # Back on: the same pixels as the first time.
        assert pixels(client, "a red circle <lora:ink:0.8>") == result.images[0].image.data


def test_kohya_lora_weights_and_several_at_once(client):
    base = pixels(client, "a red circle")
    full = pixels(client, "a red circle <lora:grain:1>")
    half = pixels(client, "a red circle <lora:grain:0.5>")
    assert len({base, full, half}) == 3
    both = client.generate(request("<lora:grain:0.5> a red circle <lora:ink:0.7>"))
    assert both.images[0].image.data not in (base, full, half)
    assert both.info["loras"] == [{"name": "grain", "weight": 0.5}, {"name": "ink", "weight": 0.7}]
    # Tags in the negative prompt and in regions count too, once per LoRA.
    mask = Mask(width=64, height=64, format="a8", data=bytes([255]) * (64 * 64))
    spread = client.generate(request("a red circle", negative_prompt="<lora:grain:0.25>",
                                     regions=[Region(mask=mask, prompt="moss <lora:grain:0.25>")]))
    assert spread.info["loras"] == [{"name": "grain", "weight": 0.5}]


def test_sdxl_lora(client):
    base = pixels(client, "a red circle", model="tiny-sdxl")
    assert pixels(client, "a red circle <lora:xl ink:1>", model="tiny-sdxl") != base
    assert pixels(client, "a red circle", model="tiny-sdxl") == base


@pytest.mark.parametrize(("fields", "field"), [
    ({"prompt": "a cat <lora:nope:0.5>"}, "prompt"),
    ({"negative_prompt": "<lora:nope>"}, "negative_prompt"),
    ({"regions": [Region(mask=Mask(width=8, height=8, format="a8", data=bytes(64)), prompt="<lora:nope:1>")]},
     "regions[0].prompt"),
])
def test_unknown_lora_is_refused_before_queueing(client, fields, field):
    error = refusal(client, request(**{"prompt": "a cat", **fields}))
    assert (error.code, error.field) == ("unknown_model", field)
    assert "'nope'" in error.message


def test_lora_of_the_other_family_is_refused(client):
    error = refusal(client, request("a cat <lora:xl ink:1>"))
    assert (error.code, error.field) == ("bad_request", "prompt")
    assert "SDXL" in error.message and "SD1.5" in error.message


def test_embedding_by_file_name(client, library, tmp_path):
    named = client.generate(request("a cat, paperstyle"))
    assert named.info["embeddings"] == ["PaperStyle"]
    negative = client.generate(request("a cat", negative_prompt="(PaperStyle:1.2)"))
    assert negative.info["embeddings"] == ["PaperStyle"]
    # The same words without the file are only words.
    path = library / "embeddings" / "PaperStyle.safetensors"
    path.rename(tmp_path / path.name)
    try:
        client.models()  # rescans
        plain = client.generate(request("a cat, paperstyle"))
    finally:
        (tmp_path / path.name).rename(path)
        client.models()
    assert plain.info["embeddings"] == []
    assert plain.images[0].image.data != named.images[0].image.data


def test_a_lora_that_fails_to_load_is_reported_and_leaves_no_trace(client, server):
    before = pixels(client, "a red circle")
    with pytest.raises(ServerError) as caught:
        client.generate(request("a red circle <lora:misfit:1>"))
    error = caught.value.error
    assert (error.code, error.field) == ("model_broken", "prompt") and "misfit" in error.message
    assert pixels(client, "a red circle") == before
    # Listed as refused (until the next scan) and refused before queueing.
    with Client(url(server), name="another") as other:
        refused = {m.name: m for m in other.welcome.models if m.kind == "lora"}["misfit"]
    assert refused.refused.startswith("could not be loaded")
    assert refusal(client, request("a cat <lora:misfit>")).code == "model_broken"
