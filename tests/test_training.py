"""Training through the real server: each kind on each family writes a file that our loader (a real
generate using it) and diffusers' loaders both read; the same seed gives the same file; and every
refusal names its field."""

from __future__ import annotations

import uuid
from pathlib import Path

import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file

from server.config import ServerConfig
from server.imaging.payloads import from_pil
from shared.client import Client, ServerError
from shared.messages import Cancel, Cancelled, Error, Generate, Image, Progress, Queued
from shared.training import TrainingImage
from testing.serving import running_server, url
from testing.tiny_models import tiny_pipeline
from testing.training import TRIGGER, header, outcome, train_request


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The first models folder: where the server writes what it trains (the session's folder is shared)."""
    return tmp_path_factory.mktemp("trained")


@pytest.fixture(scope="module")
def server(trained, models_dir, tmp_path_factory):
    config = ServerConfig(models=[trained, models_dir], outputs=tmp_path_factory.mktemp("outputs"))
    with running_server(config) as running:
        yield running


def train(client: Client, **fields):
    """Train and return (result, progress messages)."""
    progress: list[Progress] = []
    request = train_request(**fields)
    result = client.train(request, on_message=lambda m: progress.append(m) if isinstance(m, Progress) else None,
                          timeout=300)
    return result, progress


def pixels(client: Client, prompt: str, model: str) -> bytes:
    request = Generate(id=uuid.uuid4().hex, mode="txt2img", model=model, prompt=prompt, width=64, height=64,
                       steps=2, seed=3)
    return client.generate(request, timeout=120).images[0].image.data


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_a_lora_is_trained_listed_and_loaded_by_our_generate_and_by_diffusers(client, trained, model):
    result, progress = train(client, model=model, sample_every=3)
    assert result.name in {m.name for m in client.models() if m.kind == "lora"}
    assert result.file == f"{result.name}.safetensors" and "/" not in result.file
    assert [p.step for p in progress][-1] == 3 and all(p.loss is not None and p.loss > 0 for p in progress)
    assert any(p.preview is not None for p in progress) and len(result.images) == 1
    assert result.info["steps"] == 3 and result.info["rank"] == 16 and result.info["resumed_from"] == 0
    keys, meta = header(trained / "loras" / result.file)
    assert all(k.startswith("lora_unet_") for k in keys)
    assert (meta["ss_sd_model_name"], meta["ss_steps"], meta["ss_network_dim"]) == (model, "3", "16")
    assert meta["ss_trigger"] == TRIGGER and meta["ss_num_train_images"] == "3"
    # Ours: the LoRA changes the picture.
    assert pixels(client, f"{TRIGGER} <lora:{result.name}:1>", model) != pixels(client, TRIGGER, model)
    # diffusers': every tensor of the file finds its layer.
    pipe = tiny_pipeline("sd15" if model == "tiny-sd15" else "sdxl")
    pipe.load_lora_weights(str(trained / "loras"), weight_name=result.file, adapter_name="trained")
    assert "trained" in pipe.get_list_adapters()["unet"]
    loaded = sum(1 for name, _ in pipe.unet.named_parameters() if "lora_A.trained" in name)
    assert loaded == sum(1 for k in keys if k.endswith("lora_down.weight"))


def test_a_lora_with_its_text_encoder_writes_lora_te_keys(client, trained):
    result, _ = train(client, train_text_encoder=True)
    keys, _ = header(trained / "loras" / result.file)
    assert any(k.startswith("lora_te_") for k in keys) and any(k.startswith("lora_unet_") for k in keys)
    pipe = tiny_pipeline("sd15")
    pipe.load_lora_weights(str(trained / "loras"), weight_name=result.file, adapter_name="trained")
    assert "trained" in pipe.get_list_adapters()["text_encoder"]


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_an_embedding_is_trained_listed_and_loaded_by_our_generate_and_by_diffusers(client, trained, model):
    result, progress = train(client, kind="embedding", model=model, learning_rate=0.5)
    assert result.name in {m.name for m in client.models() if m.kind == "embedding"}
    assert result.info["kind"] == "embedding" and result.info["rank"] is None
    path = trained / "embeddings" / result.file
    keys, meta = header(path)
    assert keys == (["emb_params"] if model == "tiny-sd15" else ["clip_g", "clip_l"])
    assert meta["ss_trigger"] == TRIGGER and meta["ss_steps"] == "3"
    # Ours: an embedding is written by its name in the prompt.
    assert pixels(client, f"a {result.name}", model) != pixels(client, "a", model)
    pipe = tiny_pipeline("sd15" if model == "tiny-sd15" else "sdxl")
    tensors = load_file(str(path))
    if model == "tiny-sd15":
        pipe.load_textual_inversion(str(path), token="<trained>")
    else:
        pipe.load_textual_inversion(tensors["clip_l"], token="<trained>", text_encoder=pipe.text_encoder,
                                    tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(tensors["clip_g"], token="<trained>", text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)
    token = pipe.tokenizer.convert_tokens_to_ids("<trained>")
    first = tensors["emb_params" if model == "tiny-sd15" else "clip_l"][0]
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[token].detach(), first)


def test_the_same_seed_trains_the_same_file_bytes(client, trained):
    name = f"again-{uuid.uuid4().hex[:6]}"
    first, _ = train(client, name=name, sample_every=2)
    path = trained / "loras" / first.file
    written = path.read_bytes()
    path.unlink()
    client.models()  # a rescan: the name is free again
    second, _ = train(client, name=name, sample_every=2)
    assert path.read_bytes() == written
    assert second.images[0].image.data == first.images[0].image.data
    other, _ = train(client, seed=8)
    theirs, ours = load_file(str(trained / "loras" / other.file)), load_file(str(path))
    assert not all(torch.equal(theirs[k], ours[k]) for k in ours)


def refusal(client: Client, request) -> Error:
    """The error for `request`, which must come before the job is queued."""
    client.send(request)
    for reply in client.messages(timeout=60):
        assert not isinstance(reply, (Queued, Progress)), "refused only after queueing"
        if isinstance(reply, Error):
            return reply
    raise AssertionError("unreachable")


def wrong_size_png() -> TrainingImage:
    image = from_pil(PIL.Image.new("RGBA", (8, 8)), "png")
    return TrainingImage(image=Image(width=10, height=10, format="png", data=image.data))


@pytest.mark.parametrize(("fields", "code", "field"), [
    ({"images": []}, "bad_request", "images"),
    ({"images": [wrong_size_png()]}, "bad_request", "images[0].image.data"),
    ({"images": [TrainingImage(image=Image(width=4, height=4, format="rgba8", data=b"\0" * 10))]},
     "bad_request", "images[0].image.data"),
    ({"model": "no-such-model"}, "unknown_model", "model"),
    ({"model": "old"}, "model_broken", "model"),
    ({"model": "tiny-sd15-inpaint"}, "unsupported", "model"),
    ({"kind": "embedding", "trigger": "red"}, "bad_request", "trigger"),
    ({"kind": "embedding", "rank": 4}, "bad_request", "rank"),
    ({"name": "../evil"}, "bad_request", "name"),
    ({"name": "taken"}, "bad_request", "name"),
])
def test_refusals_name_their_field(client, trained, fields, code, field):
    (trained / "loras").mkdir(exist_ok=True)
    save_file({"x": torch.zeros(1)}, str(trained / "loras" / "taken.safetensors"))
    error = refusal(client, train_request(**fields))
    assert (error.code, error.field) == (code, field), error.message
    if field == "name" and fields["name"] == "taken":
        assert "'taken'" in error.message


def test_a_second_training_of_a_name_under_way_is_refused(server, client):
    request = train_request(steps=100_000)
    client.send(request)
    with Client(url(server), name="second") as other:
        error = refusal(other, train_request(name=request.name))
    assert (error.code, error.field) == ("bad_request", "name")
    client.send(Cancel(id=request.id))
    assert isinstance(outcome(client, request.id), Cancelled)


def test_a_failed_training_request_leaves_the_server_serving(client):
    with pytest.raises(ServerError):
        client.train(train_request(model="no-such-model"), timeout=60)
    assert pixels(client, "a", "tiny-sd15")
