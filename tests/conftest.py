"""Shared test setup: no network, modest CPU use, the tiny models written once per session."""

from __future__ import annotations

import os

# Before diffusers / huggingface_hub are imported: they read it at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from testing.tiny_models import write_tiny_adapters, write_tiny_models  # noqa: E402

# Other engineers' test runs share this machine.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny models of testing/tiny_models.py (see write_tiny_models)."""
    return written(tmp_path_factory, "models", write_tiny_models)


@pytest.fixture(scope="session")
def adapters(models_dir: Path) -> Path:
    """The tiny LoRAs and embeddings, added to `models_dir` (see write_tiny_adapters). Its own
    fixture: a LoRA problem fails the tests that use LoRAs, not every test with a model."""
    write_tiny_adapters(models_dir)
    return models_dir


@pytest.fixture(scope="session")
def controlnets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder of the tiny ControlNets (testing/tiny_controlnets.py)."""
    from testing.tiny_controlnets import write_tiny_controlnets

    return written(tmp_path_factory, "controlnets", write_tiny_controlnets)


@pytest.fixture(scope="session")
def references(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder of the tiny IP-Adapters and CLIP vision encoder (testing/tiny_references.py)."""
    from testing.tiny_references import write_tiny_references

    return written(tmp_path_factory, "references", write_tiny_references)


def written(tmp_path_factory: pytest.TempPathFactory, name: str, write: Callable[[Path], object]) -> Path:
    root = tmp_path_factory.mktemp(name)
    write(root)
    return root


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real server on a free loopback port with the tiny models, one per test module; it keeps a job
    log (`server.config.log_file`) as `--log-file` does, for the tests that check what it records."""
    from server.config import ServerConfig
    from testing.serving import running_server

    folder = tmp_path_factory.mktemp("server")
    config = ServerConfig(models=[models_dir], outputs=folder / "outputs", log_file=folder / "jobs.log")
    with running_server(config) as running:
        yield running


@pytest.fixture
def client(server):
    """A connection to the module's server that has said hello."""
    from shared.client import Client
    from testing.serving import url

    with Client(url(server), name="test") as connected:
        yield connected
