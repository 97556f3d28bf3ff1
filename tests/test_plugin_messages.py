"""What the artist reads when something goes wrong, from the plugin's own connection thread and
controller against a real server: the server killed or stopped in the middle of a job, something
that is not Underpaint on the port, model files the server refuses."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from plugin_support import FakeDocument, FakeWorkspace
from underpaint_krita.connection import Backoff, Connection
from underpaint_krita.controller import Controller

from testing.processes import ServerProcess, free_port
from testing.web import web_server

STOPPED = "The server stopped while generating. Reconnecting…"
BACK = "The server stopped while generating; it is running again. Generate again."


@pytest.fixture(scope="module")
def models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A usable checkpoint beside a pickle and a file that is not a model."""
    folder = tmp_path_factory.mktemp("messages-models")
    checkpoints = folder / "checkpoints"
    shutil.copytree(models_dir / "checkpoints" / "tiny-sd15", checkpoints / "tiny-sd15")
    (checkpoints / "old.ckpt").write_bytes(b"\x80\x04not unpickled")
    (checkpoints / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    return folder


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module; a test that ends it starts it again."""
    with ServerProcess(models, tmp_path_factory.mktemp("messages-server")) as running:
        yield running


class Plugin:
    """The plugin's controller and connection thread over one document, polled as Krita's timer does."""

    def __init__(self, url: str):
        self.document = FakeDocument(96, 64)
        self.connection = Connection(url, backoff=Backoff(first=0.1, factor=2.0, limit=0.5), wait_limit=60)
        self.controller = Controller(self.connection, FakeWorkspace([self.document], self.document))
        self.connection.start()

    def until(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, (self.controller.server.message, self.controller.message)
            self.controller.poll()
            time.sleep(0.02)

    def running_job(self) -> None:
        """A long job, running."""
        settings = self.controller.settings
        settings.model, settings.prompt, settings.steps = "tiny-sd15", "a long job", 150
        self.controller.generate()
        job = self.controller.session().jobs[0]
        self.until(lambda: job.state == "running" and job.step > 0)


@pytest.fixture
def plugin() -> Iterator[Callable[[str], Plugin]]:
    started: list[Plugin] = []

    def start(url: str) -> Plugin:
        started.append(Plugin(url))
        return started[-1]

    yield start
    for each in started:
        each.connection.stop()


@pytest.mark.parametrize("end", ["kill", "stop"])
def test_the_server_ending_mid_job_says_so_and_then_that_it_is_back(
        server: ServerProcess, plugin: Callable[[str], Plugin], end: str) -> None:
    """Killed (a crash, out of memory) or stopped (Ctrl+C, SIGTERM: the server cancels its jobs with
    `server stopping`): never "Cancelled.", which reads as if the artist had cancelled."""
    artist = plugin(server.url)
    artist.until(lambda: artist.controller.server.connected)
    artist.running_job()
    getattr(server, end)()
    try:
        artist.until(lambda: not artist.controller.session().jobs)
        assert artist.controller.message == STOPPED
        artist.until(lambda: not artist.controller.server.connected)
        assert artist.controller.message == STOPPED
    finally:
        server.start()
    artist.until(lambda: artist.controller.server.connected)
    assert artist.controller.message == BACK


def test_something_else_on_the_port_is_named_and_told_apart_from_nothing_there(
        plugin: Callable[[str], Plugin]) -> None:
    with web_server() as port:
        artist = plugin(f"ws://127.0.0.1:{port}")
        expected = f"Something at 127.0.0.1:{port} is not an Underpaint server. Check the address and port."
        artist.until(lambda: artist.controller.server.message.startswith(expected))
        # A job asked for meanwhile fails at once: waiting for this address cannot help.
        artist.controller.settings.model = "tiny-sd15"
        artist.controller.generate()
        artist.until(lambda: not artist.controller.session().jobs, timeout=10)
        assert artist.controller.message == expected
    nothing = free_port()
    artist.controller.set_server(f"ws://127.0.0.1:{nothing}")
    artist.until(lambda: artist.controller.server.message.startswith(
        f"Cannot reach the server at 127.0.0.1:{nothing}. Is it running?"))


def test_refused_model_files_are_listed_with_the_reason(server: ServerProcess,
                                                         plugin: Callable[[str], Plugin]) -> None:
    artist = plugin(server.url)
    artist.until(lambda: artist.controller.server.connected)
    server_state = artist.controller.server
    assert server_state.models == ["tiny-sd15"]
    refused = {info.name: info.refused for info in server_state.refused}
    assert set(refused) == {"broken", "old"}
    assert "pickle files" in refused["old"] and "safetensors version" in refused["old"]
    assert "truncated or not a safetensors file" in refused["broken"]
