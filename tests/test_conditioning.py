"""Prompts -> text embeddings on the tiny pipelines: compel's math, long prompts, embeddings, the cache."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from server.conditioning.conditioner import Conditioner
from server.conditioning.regions import latent_masks
from server.models.embeddings import vector_count
from server.models.entry import ModelEntry
from server.models.registry import Registry
from shared.client import Client
from shared.crop import Rect
from shared.messages import Generate, Mask, Region
from testing.tiny_models import TEXT2_HIDDEN, TEXT_HIDDEN, tiny_pipeline

CHUNK = 77
FRAME = Rect(0, 0, 64, 64)


@pytest.fixture(scope="module")
def pipes():
    return {family: tiny_pipeline(family) for family in ("sd15", "sdxl")}


def model(family: str) -> ModelEntry:
    return ModelEntry(name=f"tiny-{family}", kind="checkpoint", path=Path(f"/nowhere/tiny-{family}"),
                      format="diffusers", family=family, variant="regular")


def request(prompt: str = "a red circle", **fields) -> Generate:
    return Generate(id=uuid.uuid4().hex, mode="txt2img", model="m", prompt=prompt, **fields)


def embeds(conditioner: Conditioner, pipe, family: str, prompt: str, **fields) -> dict[str, torch.Tensor]:
    return conditioner.prepare(pipe, model(family), request(prompt, **fields)).arguments


@pytest.fixture
def conditioner(tmp_path):
    registry = Registry([tmp_path])
    registry.scan()
    return Conditioner(registry)


def test_plain_sd15_prompt_is_what_diffusers_encodes(pipes, conditioner):
    pipe = pipes["sd15"]
    got = embeds(conditioner, pipe, "sd15", "a red circle", negative_prompt="blurry")
    positive, negative = pipe.encode_prompt("a red circle", "cpu", 1, True, negative_prompt="blurry")
    assert torch.equal(got["prompt_embeds"], positive) and torch.equal(got["negative_prompt_embeds"], negative)
    assert "pooled_prompt_embeds" not in got


def test_plain_sdxl_prompt_is_what_diffusers_encodes(pipes, conditioner):
    # SDXL takes both encoders' penultimate hidden states: compel must not reach for final_layer_norm,
    # which transformers >= 5.6 moved; this runs on the installed transformers.
    pipe = pipes["sdxl"]
    got = embeds(conditioner, pipe, "sdxl", "a red circle")
    positive, negative, pooled, negative_pooled = pipe.encode_prompt("a red circle", device="cpu")
    assert torch.equal(got["prompt_embeds"], positive) and torch.equal(got["pooled_prompt_embeds"], pooled)
    # An empty negative prompt is zeros, as SDXL was trained.
    assert not got["negative_prompt_embeds"].any() and not got["negative_pooled_prompt_embeds"].any()
    assert torch.equal(got["negative_prompt_embeds"], negative)
    given = embeds(conditioner, pipe, "sdxl", "a red circle", negative_prompt="blurry")
    assert given["negative_prompt_embeds"].any()


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_weights_move_the_embedding_monotonically(pipes, conditioner, family):
    pipe = pipes[family]

    def distance(weight: float) -> float:
        plain = embeds(conditioner, pipe, family, "a red cat on grass")["prompt_embeds"]
        weighted = embeds(conditioner, pipe, family, f"a red (cat:{weight}) on grass")["prompt_embeds"]
        return (weighted - plain).norm().item()

    assert distance(1.0) == 0.0
    up = [distance(w) for w in (1.0, 1.1, 1.3, 1.6)]
    down = [distance(w) for w in (1.0, 0.9, 0.6, 0.3)]
    assert up == sorted(up) and len(set(up)) == 4
    assert down == sorted(down) and len(set(down)) == 4


@pytest.mark.parametrize("syntax", ["a1111", "novelai", "compel"])
def test_each_syntax_weights(pipes, conditioner, syntax):
    pipe = pipes["sd15"]
    weighted = {"a1111": "a red (cat) on grass", "novelai": "a red {cat} on grass", "compel": "a red cat+ on grass"}
    plain = embeds(conditioner, pipe, "sd15", "a red cat on grass", prompt_syntax=syntax)["prompt_embeds"]
    got = embeds(conditioner, pipe, "sd15", weighted[syntax], prompt_syntax=syntax)["prompt_embeds"]
    assert got.shape == plain.shape and not torch.equal(got, plain)


def test_negative_prompts_use_the_same_syntax(pipes, conditioner):
    pipe = pipes["sd15"]
    plain = embeds(conditioner, pipe, "sd15", "cat", negative_prompt="blurry, dark")
    weighted = embeds(conditioner, pipe, "sd15", "cat", negative_prompt="(blurry:1.4), dark")
    assert torch.equal(plain["prompt_embeds"], weighted["prompt_embeds"])
    assert not torch.equal(plain["negative_prompt_embeds"], weighted["negative_prompt_embeds"])


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_long_prompts_are_chunked_never_truncated(pipes, conditioner, family):
    pipe = pipes[family]
    head = ", ".join(["a small red house"] * 20)  # 100 words, more than one chunk
    first = embeds(conditioner, pipe, family, f"{head}, a blue sky")
    second = embeds(conditioner, pipe, family, f"{head}, a green sea")
    tokens = first["prompt_embeds"].shape[1]
    assert tokens > CHUNK and tokens % CHUNK == 0
    # The negative is padded to the positive's length so both go through the UNet together.
    assert first["negative_prompt_embeds"].shape == first["prompt_embeds"].shape
    assert torch.equal(first["prompt_embeds"][:, :CHUNK], second["prompt_embeds"][:, :CHUNK])
    assert not torch.equal(first["prompt_embeds"][:, CHUNK:], second["prompt_embeds"][:, CHUNK:])


def test_break_starts_a_new_chunk(pipes, conditioner):
    pipe = pipes["sd15"]
    both = embeds(conditioner, pipe, "sd15", "a cat BREAK a dog")["prompt_embeds"]
    cat = embeds(conditioner, pipe, "sd15", "a cat")["prompt_embeds"]
    dog = embeds(conditioner, pipe, "sd15", "a dog")["prompt_embeds"]
    assert torch.equal(both, torch.cat([cat, dog], dim=1))


def test_cache_counts_hits_and_misses_per_text(pipes, conditioner):
    pipe = pipes["sd15"]
    cache = conditioner.cache
    embeds(conditioner, pipe, "sd15", "a cat", negative_prompt="blurry")
    assert (cache.hits, cache.misses) == (0, 2)
    embeds(conditioner, pipe, "sd15", "a cat", negative_prompt="blurry")
    assert (cache.hits, cache.misses) == (2, 2)
    embeds(conditioner, pipe, "sd15", "a dog", negative_prompt="blurry")  # only the positive is new
    assert (cache.hits, cache.misses) == (3, 3)
    embeds(conditioner, pipe, "sd15", "a dog", negative_prompt="blurry", prompt_syntax="novelai")
    assert (cache.hits, cache.misses) == (3, 5)


def test_cache_is_bounded(pipes, tmp_path):
    registry = Registry([tmp_path])
    registry.scan()
    conditioner = Conditioner(registry, cache_size=3)
    for i in range(5):
        embeds(conditioner, pipes["sd15"], "sd15", f"cat number {i}")
    assert len(conditioner.cache) == 3


def write_embedding(folder: Path, name: str, family: str, vectors: int = 2) -> dict[str, torch.Tensor]:
    """A textual-inversion file in the A1111 layout of `family`."""
    gen = torch.Generator().manual_seed(7)
    if family == "sd15":
        tensors = {"emb_params": torch.randn(vectors, TEXT_HIDDEN, generator=gen)}
    else:
        tensors = {"clip_l": torch.randn(vectors, TEXT_HIDDEN, generator=gen),
                   "clip_g": torch.randn(vectors, TEXT2_HIDDEN, generator=gen)}
    (folder / "embeddings").mkdir(exist_ok=True)
    save_file(tensors, str(folder / "embeddings" / f"{name}.safetensors"))
    return tensors


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_embedding_is_used_by_its_file_name(tmp_path, family):
    pipe = tiny_pipeline(family)  # its own: loading an embedding changes the vocabulary
    tensors = write_embedding(tmp_path, "InkStyle", family)
    registry = Registry([tmp_path])
    registry.scan()
    conditioner = Conditioner(registry)
    other = embeds(conditioner, pipe, family, "a photo of a cat")["prompt_embeds"]

    prepared = conditioner.prepare(pipe, model(family), request("a photo, (inkstyle:1.1)", negative_prompt="InkStyle"))
    assert prepared.info["embeddings"] == ["InkStyle"]
    with_file = prepared.arguments["prompt_embeds"]
    registry_without = Registry([tmp_path / "empty"])
    registry_without.scan()
    without_file = embeds(Conditioner(registry_without), tiny_pipeline(family), family, "a photo, (inkstyle:1.1)")
    assert not torch.equal(with_file, without_file["prompt_embeds"])

    # The file's vectors are what the text encoder now holds, for each encoder.
    encoders = [(pipe.tokenizer, pipe.text_encoder, "clip_l" if family == "sdxl" else "emb_params")]
    if family == "sdxl":
        encoders.append((pipe.tokenizer_2, pipe.text_encoder_2, "clip_g"))
    for tokenizer, text_encoder, key in encoders:
        token = next(t for t in tokenizer.get_added_vocab() if t.startswith("<ti-") and "_" not in t)
        assert vector_count(tokenizer, token) == 2
        ids = tokenizer.convert_tokens_to_ids([token, f"{token}_1"])
        table = text_encoder.get_input_embeddings().weight
        assert torch.equal(table[ids], tensors[key])
    # Prompts that do not name it are untouched.
    assert torch.equal(embeds(conditioner, pipe, family, "a photo of a cat")["prompt_embeds"], other)


def test_regions_follow_the_global_prompt(pipes, conditioner):
    pipe = pipes["sd15"]
    mask = Mask(width=64, height=64, format="a8", data=bytes(64 * 64))
    regions = [Region(mask=mask, prompt="a tree"), Region(mask=mask, prompt="a lake", negative_prompt="boats")]
    masks = latent_masks(regions, FRAME, (8, 8))
    prepared = conditioner.prepare(pipe, model("sd15"), request("a landscape", negative_prompt="blurry",
                                                                regions=regions), masks)
    positive, negative = prepared.arguments["prompt_embeds"], prepared.arguments["negative_prompt_embeds"]
    assert positive.shape[1] == negative.shape[1] == 3 * CHUNK
    assert prepared.restriction.spans == [(CHUNK, 2 * CHUNK), (2 * CHUNK, 3 * CHUNK)]
    assert prepared.restriction.masks.shape == (2, 8, 8)

    def alone(text: str) -> torch.Tensor:
        return embeds(conditioner, pipe, "sd15", text)["prompt_embeds"]

    assert torch.equal(positive[:, CHUNK:2 * CHUNK], alone("a tree"))
    # A region without a negative prompt repeats the global one; with one, it has its own.
    assert torch.equal(negative[:, CHUNK:2 * CHUNK], negative[:, :CHUNK])
    assert torch.equal(negative[:, 2 * CHUNK:], alone("boats"))


# --- pictures from the real server -------------------------------------------------------------------


def pixels(client: Client, prompt: str, **fields) -> bytes:
    fields = {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 2, "seed": 3, **fields}
    return client.generate(Generate(id=uuid.uuid4().hex, mode="txt2img", prompt=prompt, **fields)).images[0].image.data


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_weight_one_gives_exactly_the_plain_pixels(client, model):
    plain = pixels(client, "a red house on a hill", negative_prompt="blurry", model=model)
    assert pixels(client, "a red (house:1.0) on a hill", negative_prompt="(blurry:1.0)", model=model) == plain
    assert pixels(client, "a red (house)1.0 on a hill", negative_prompt="blurry", model=model,
                  prompt_syntax="compel") == plain
    assert pixels(client, "a red (house:1.3) on a hill", negative_prompt="blurry", model=model) != plain


def test_the_tail_of_a_long_prompt_changes_the_picture(client):
    head = ", ".join(["a small red house with a garden"] * 12)  # about 100 tokens
    assert pixels(client, f"{head}, under a blue sky") != pixels(client, f"{head}, under a green sky")
