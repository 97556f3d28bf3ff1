"""The plugin's network thread against a real server it starts late, kills and restarts:
requests made while disconnected are sent after reconnect or reported failed, never dropped."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from plugin_support import FakeDocument, FakeWorkspace, server_url_or_own
from underpaint_krita.connection import Backoff, Connected, Connection, Disconnected, Failed, Received
from underpaint_krita.controller import Controller

from shared.messages import Finalize, Generate, Image, Live, Preprocess, Progress, Result
from shared.training import Train, TrainingImage
from testing.processes import ServerProcess, free_port


def _job(job_id: str, steps: int = 2, side: int = 64) -> Generate:
    return Generate(id=job_id, mode="txt2img", model="tiny-sd15", width=side, height=side, steps=steps, seed=1,
                    preview=True)


class Collector:
    """Drains a connection's events the way the plugin's timer does."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.events: list = []

    def wait_for(self, condition: Callable[[object], bool], timeout: float = 60.0) -> object:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.events.extend(self.connection.events())
            for event in self.events[seen:]:
                if condition(event):
                    return event
            seen = len(self.events)
            time.sleep(0.02)
        raise AssertionError(f"timed out; events: {[type(e).__name__ for e in self.events]}")


def _is(kind: type, job_id: str | None = None) -> Callable[[object], bool]:
    def check(event: object) -> bool:
        if isinstance(event, Received):
            event = event.message
        return isinstance(event, kind) and (job_id is None or getattr(event, "id", None) == job_id
                                            or getattr(event, "job_id", None) == job_id)

    return check


@pytest.fixture
def fast_backoff() -> Backoff:
    return Backoff(first=0.1, factor=2.0, limit=0.5)


def test_requests_wait_for_the_server_survive_its_death_and_fail_loudly(
        models_dir: Path, tmp_path: Path, fast_backoff: Backoff) -> None:
    server = ServerProcess(models_dir, tmp_path / "outputs", port=free_port())
    connection = Connection(server.url, backoff=fast_backoff, wait_limit=120.0)
    events = Collector(connection)
    connection.start()
    try:
        # 1. Asked while no server runs: it waits in the outbox, then runs once the server is up.
        connection.submit(_job("early"))
        events.wait_for(_is(Disconnected))
        server.start()
        events.wait_for(_is(Connected))
        result = events.wait_for(_is(Result, "early"))
        assert result.message.images[0].image.width == 64

        # 2. The server dies while a job runs: the job is reported lost, not left hanging.
        connection.submit(_job("running", steps=150, side=256))
        events.wait_for(_is(Progress, "running"))
        server.kill()
        lost = events.wait_for(_is(Failed, "running"))
        assert lost.code == "connection_lost"
        events.wait_for(_is(Disconnected))

        # 3. Asked while it is down, sent when it is back.
        connection.submit(_job("later"))
        server.start()
        events.wait_for(_is(Result, "later"))
        assert not any(_is(Result, "running")(e) for e in events.events)
    finally:
        connection.stop()
        server.kill()


_TRAIN = Train(id="lonely", kind="lora", model="tiny-sd15", name="cat", trigger="cat",
               images=[TrainingImage(Image(width=8, height=8, format="rgba8", data=bytes(256)))])


_PREPROCESS = Preprocess(id="lonely", kind="canny", image=Image(width=8, height=8, format="rgba8", data=bytes(256)))


@pytest.mark.parametrize("request_", [_job("lonely"), Finalize(id="lonely"), _TRAIN, _PREPROCESS],
                         ids=["generate", "finalize", "train", "preprocess"])
def test_a_request_nobody_answers_is_reported_failed_after_the_wait_limit(fast_backoff: Backoff,
                                                                           request_: Generate | Finalize) -> None:
    connection = Connection(f"ws://127.0.0.1:{free_port()}", backoff=fast_backoff, wait_limit=0.5)
    events = Collector(connection)
    connection.start()
    try:
        started = time.monotonic()
        connection.submit(request_)
        failed = events.wait_for(_is(Failed, "lonely"), timeout=10)
        assert failed.code == "unreachable"
        assert 0.5 <= time.monotonic() - started < 3.0
    finally:
        connection.stop()


def test_a_wrong_token_fails_waiting_jobs_at_once_and_the_right_one_connects(
        models_dir: Path, tmp_path: Path, fast_backoff: Backoff) -> None:
    server = ServerProcess(models_dir, tmp_path / "outputs", token="s3cret")
    server.start()
    connection = Connection(server.url, token="wrong", backoff=fast_backoff, wait_limit=60)
    events = Collector(connection)
    connection.start()
    try:
        connection.submit(_job("refused"))
        failed = events.wait_for(_is(Failed, "refused"), timeout=20)
        assert failed.code == "unauthorized"  # waiting cannot help: reported now, not after the wait limit
        refused = events.wait_for(_is(Disconnected))
        assert refused.code == "unauthorized"
        connection.set_url(server.url, token="s3cret")
        events.wait_for(_is(Connected), timeout=20)
        connection.submit(_job("accepted"))
        events.wait_for(_is(Result, "accepted"))
    finally:
        connection.stop()
        server.kill()


def test_cancel_before_sending_and_newer_live_frames_replace_unsent_ones(fast_backoff: Backoff) -> None:
    connection = Connection(f"ws://127.0.0.1:{free_port()}", backoff=fast_backoff, wait_limit=60)
    # Not started: everything stays in the outbox, as while disconnected.
    connection.submit(_job("a"))
    connection.cancel("a")
    connection.submit(replace(_TRAIN, id="t"))
    connection.cancel("t")
    connection.submit(replace(_PREPROCESS, id="p"))
    connection.cancel("p")
    frame = dict(mode="txt2img", model="tiny-sd15", session="s")
    connection.submit(Live(id="f1", **frame))
    connection.submit(Live(id="f2", **frame))
    connection.submit(Live(id="g1", **dict(frame, session="other")))
    got = [(type(e.message).__name__, e.message.id, e.message.reason) for e in connection.events()]
    unsent = "cancelled before it was sent"
    assert got == [("Cancelled", "a", unsent), ("Cancelled", "t", unsent), ("Cancelled", "p", unsent),
                   ("Cancelled", "f1", "superseded")]


@pytest.mark.parametrize("attempts, expected", [(1, [0.5]), (6, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0])])
def test_backoff_doubles_up_to_its_limit(attempts: int, expected: list[float]) -> None:
    backoff = Backoff()
    assert [backoff.next() for _ in range(attempts)] == expected
    backoff.reset()
    assert backoff.next() == 0.5


@pytest.fixture(scope="module")
def plugin_server_url(request: pytest.FixtureRequest, models_dir: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from server_url_or_own(request, models_dir, tmp_path_factory)


def test_controller_end_to_end_with_a_real_server(plugin_server_url: str, fast_backoff: Backoff) -> None:
    """Generate at a canvas size the model does not natively use: the result comes back at canvas size."""
    document = FakeDocument(96, 40)
    connection = Connection(plugin_server_url, backoff=fast_backoff)
    controller = Controller(connection, FakeWorkspace([document], document))
    connection.start()
    try:
        deadline = time.monotonic() + 30
        while not controller.server.connected and time.monotonic() < deadline:
            controller.poll()
            time.sleep(0.02)
        assert controller.settings.model  # picked from welcome
        controller.settings.model = "tiny-sd15"
        controller.settings.prompt = "a red fox"
        controller.settings.steps = 2
        controller.settings.batch_size = 2
        job_id = controller.generate()
        while controller.session().jobs and time.monotonic() < deadline + 60:
            controller.poll()
            time.sleep(0.02)
        assert controller.message == ""
        entries = list(controller.session().history)
        assert [e.id for e in entries] == [f"{job_id}-0", f"{job_id}-1"]
        assert entries[1].seed == entries[0].seed + 1
        name, preview = document.preview
        assert name == "[Preview] a red fox"
        assert preview.bounds == (0, 0, 96, 40)
        assert controller.apply(entries[1].id) == f"[Generated] a red fox ({entries[1].seed})"
        assert document.layers[0][1].bounds == (0, 0, 96, 40)

        controller.settings.batch_size, controller.settings.steps = 1, 150
        controller.generate()
        job = controller.session().jobs[0]
        while job.state != "running" and time.monotonic() < deadline + 90:
            controller.poll()
            time.sleep(0.02)
        controller.cancel()
        while controller.session().jobs and time.monotonic() < deadline + 90:
            controller.poll()
            time.sleep(0.02)
        assert controller.message == "Cancelled." and job.step < 150
        controller.settings.steps = 2

        controller.settings.model = "no-such-model"
        controller.generate()
        while controller.session().jobs and time.monotonic() < deadline + 90:
            controller.poll()
            time.sleep(0.02)
        assert controller.message == "The server has no model of that name any more. Pick another model."

        # Live: a frame for the canvas, then one for each change; pictures land in the preview.
        controller.settings.model, controller.settings.strength = "tiny-sd15", 0.5
        controller.set_live(True)
        session = controller.session()
        for stroke in range(2):
            if stroke:
                document.pixels = bytes([200, 30, 30, 255]) * (96 * 40)
            before = session.live_result
            while session.live_result is before and time.monotonic() < deadline + 150:
                controller.poll()
                time.sleep(0.02)
            assert session.live_result is not before, controller.message
        assert session.live_result.image.bounds == (0, 0, 96, 40)
        assert controller.apply() == f"[Live] a red fox ({session.live_result.seed})"
        controller.set_live(False)
    finally:
        connection.stop()

