"""The installer degrades instead of dead-ending: a PyTorch index or a model host that cannot be
reached, or a download that fails, still ends in a finished install with a summary. Loopback
only: a host that refuses, one that never answers, one that answers 404."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_installer_download import FAST, FileServer, model_file, payload, quiet, server  # noqa: F401

from installer.environment import torch_source
from installer.models import ModelFile, install_models, report_failures
from installer.network import HTTP_ERROR, NO_NETWORK, UNREACHABLE, Reach, probe
from installer.torch_builds import TorchBuild


@pytest.fixture
def refusing_url() -> str:
    """An address on loopback where nothing listens: connections are refused."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.safetensors"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A host that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/file.safetensors"


def test_probe_tells_the_three_failures_apart(server: FileServer, refusing_url: str, silent_url: str) -> None:  # noqa: F811
    up = server.url("/")
    assert probe(up, reference=None).ok or probe(up, reference=None).problem == HTTP_ERROR

    refused = probe(refusing_url, timeout=1, reference=up)
    assert (refused.problem, refused.detail) == (UNREACHABLE, "it refused the connection")
    assert refused.describe() == "127.0.0.1 cannot be reached (it refused the connection)"

    silent = probe(silent_url, timeout=0.5, reference=up)
    assert (silent.problem, silent.detail) == (UNREACHABLE, "no answer within 0.5 s")

    # The reference fails too: the machine has no network, not one host down.
    alone = probe(refusing_url, timeout=1, reference=refusing_url)
    assert alone.problem == NO_NETWORK
    assert alone.describe() == "no network at all (it refused the connection)"

    server.files["/there"] = b"x"
    missing = probe(server.url("/missing"), reference=None)
    assert missing.problem == HTTP_ERROR and missing.describe().startswith("127.0.0.1 answered with an error (HTTP ")


def test_unreachable_host_fails_its_files_at_once_and_the_rest_installs(
    server: FileServer, refusing_url: str, tmp_path: Path  # noqa: F811
) -> None:
    good = model_file(server, "a.safetensors", payload(5000, 1), "checkpoints/a.safetensors")
    lost = [
        ModelFile(name, refusing_url.replace("file", name), "0" * 64, f"loras/{name}.safetensors", "sd15", "lora-live")
        for name in ("x", "y")
    ]
    probed: list[str] = []

    def reach(url: str) -> Reach:
        probed.append(url)
        return probe(url, timeout=1, reference=server.url("/"))

    log: list[str] = []
    failures = install_models([lost[0], good, lost[1]], tmp_path, log=log.append, reach=reach, progress=quiet, **FAST)
    assert [f.file.name for f in failures] == ["x", "y"]
    assert failures[0].reason == "127.0.0.1 cannot be reached (it refused the connection)"
    assert (tmp_path / "checkpoints" / "a.safetensors").read_bytes() == payload(5000, 1)
    # One probe per host, not one per file; the refused host is asked once.
    assert len([url for url in probed if url.startswith(refusing_url.rsplit("/", 1)[0])]) == 1
    assert log[1] == "  a.safetensors: downloaded"
    assert log[0].startswith("  x: not installed: 127.0.0.1 cannot be reached")


def test_silent_host_and_404_end_as_failures_with_reasons(
    server: FileServer, silent_url: str, tmp_path: Path  # noqa: F811
) -> None:
    missing = ModelFile("gone", server.url("/gone.safetensors"), "0" * 64, "checkpoints/g.safetensors", "sd15",
                        "checkpoint-artwork")
    silent = ModelFile("mute", silent_url, "0" * 64, "loras/m.safetensors", "sd15", "lora-live")
    failures = install_models(
        [missing, silent], tmp_path, log=lambda _: None, reach=lambda url: probe(url, timeout=0.5, reference=None),
        progress=quiet, **FAST,
    )
    assert [f.file.name for f in failures] == ["gone", "mute"]
    assert failures[0].reason.endswith("was not found (HTTP 404)")
    assert failures[1].reason == "127.0.0.1 cannot be reached (no answer within 0.5 s)"


def test_summary_names_each_file_its_host_and_the_way_on(tmp_path: Path) -> None:
    checkpoint = ModelFile("Dream", "https://huggingface.co/d.safetensors", "0" * 64, "checkpoints/d.safetensors",
                           "sd15", "checkpoint-artwork")
    lora = ModelFile("Hyper", "https://huggingface.co/h.safetensors", "0" * 64, "loras/h.safetensors", "sd15",
                     "lora-live")
    reason = "no network at all (its name could not be looked up)"
    failures = install_models([checkpoint, lora], tmp_path, log=lambda _: None,
                              reach=lambda url: Reach(url, NO_NETWORK, "its name could not be looked up"))
    lines: list[str] = []
    report_failures(failures, [checkpoint, lora], tmp_path, lines.append)
    assert lines == [
        "\nSome models could not be installed:",
        f"  could not download Dream from huggingface.co: {reason}",
        f"  could not download Hyper from huggingface.co: {reason}",
        "The server will use the built-in demo model until a checkpoint is in place.",
        "Run `underpaint models download` later to fetch them (finished parts are kept and resumed).",
    ]
    # With a checkpoint of the user's own in place, the demo model is not promised.
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "mine.safetensors").write_bytes(b"x")
    lines.clear()
    report_failures(failures, [checkpoint, lora], tmp_path, lines.append)
    assert not any("demo model" in line for line in lines)


@pytest.mark.parametrize(
    ("build", "found", "expected", "said"),
    [
        (TorchBuild("cpu", "cpu", "https://download.pytorch.org/whl/cpu"), None,
         "https://download.pytorch.org/whl/cpu", ""),
        (TorchBuild("cpu", "cpu", "https://download.pytorch.org/whl/cpu"), UNREACHABLE, None,
         "  PyTorch's index: download.pytorch.org cannot be reached (refused); installing PyPI's PyTorch instead "
         "(on Linux the CUDA build: several GB, and it runs on the CPU too)"),
        (TorchBuild("cuda", "cu128", "https://download.pytorch.org/whl/cu128"), NO_NETWORK, None,
         "  PyTorch's index: no network at all (refused); installing PyPI's PyTorch instead"),
        (TorchBuild("mps", "mps", None), UNREACHABLE, None, ""),
    ],
)
def test_torch_comes_from_pypi_when_its_index_cannot_be_reached(
    build: TorchBuild, found: str | None, expected: str | None, said: str
) -> None:
    log: list[str] = []
    assert torch_source(build, False, log.append, lambda url: Reach(url, found, "refused")) == expected
    assert log == ([said] if said else [])


def test_offline_installs_never_probe() -> None:
    build = TorchBuild("cpu", "cpu", "https://download.pytorch.org/whl/cpu")
    assert torch_source(build, True, print, lambda url: pytest.fail("probed")) == build.index_url
