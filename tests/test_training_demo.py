"""Training teaches the demo model a concept it never saw, through the real server on loopback.

"zorp" is a purple cross (tools/demo_model/concept.py): no cross is in the demo model's training
pictures and "zorp" is no word of its vocabulary. Before training, "a zorp on a white background"
paints no purple cross; after a LoRA trained from the 20 pictures it paints one at most held-out
seeds, and after an embedding purple dominates (figures: docs/demo-model.md, "Teaching it a new
concept"). The full runs are `slow`; the default run trains a short LoRA and checks that it
already paints purple at every seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.client import Client
from testing.serving import url
from tools.demo_model.concept import COLOUR, HELD_OUT_SEEDS, PROMPT
from tools.demo_model.detect import colour_share
from tools.demo_model.teach import SETTINGS, demo_server, paint, prompt_for, rates, teach


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    """A client of a server whose models folder is empty, so it serves the demo model (and writes
    what it trains there)."""
    models: Path = tmp_path_factory.mktemp("trained")
    with demo_server(models, tmp_path_factory.mktemp("outputs")) as server, Client(url(server), name="test") as client:
        yield client


SHORT_SEEDS = HELD_OUT_SEEDS[:4]


def test_a_short_lora_already_paints_purple_at_every_seed(client: Client) -> None:
    """100 steps (about 20 s of CPU): no cross yet, but purple where there was none (before: 0% of
    the picture at each seed; measured after: about 5%)."""
    before = paint(client, PROMPT, SHORT_SEEDS)
    assert rates(before) == {"concept_present": 0.0, "colour_dominant": 0.0}
    result, _ = teach(client, "lora", **{**SETTINGS["lora"], "steps": 100, "batch_size": 4})
    after = paint(client, prompt_for(result), SHORT_SEEDS)
    gained = [colour_share(a, COLOUR) - colour_share(b, COLOUR) for a, b in zip(after, before, strict=True)]
    assert min(gained) > 0.02, gained
    assert rates(after)["colour_dominant"] == 1.0


@pytest.fixture(scope="module")
def before(client: Client) -> list[np.ndarray]:
    return paint(client, PROMPT)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_before_training_the_trigger_paints_no_zorp(before: list[np.ndarray]) -> None:
    assert rates(before) == {"concept_present": 0.0, "colour_dominant": 0.0}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_lora_teaches_the_purple_cross(client: Client) -> None:
    result, minutes = teach(client, "lora", **SETTINGS["lora"])
    assert minutes["cpu_minutes"] <= 10, minutes
    assert rates(paint(client, prompt_for(result)))["concept_present"] >= 0.7


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_an_embedding_teaches_the_colour(client: Client) -> None:
    result, _ = teach(client, "embedding", **SETTINGS["embedding"])
    assert rates(paint(client, prompt_for(result)))["colour_dominant"] >= 0.7
