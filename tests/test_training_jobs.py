"""A training as a job among painting jobs: it steps aside for a generate and goes on after it, a
cancel keeps what it learnt as a file, and a server that stops mid-training resumes it when it starts
again, from its last checkpoint."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from server.config import ServerConfig
from server.training import checkpoints
from shared.client import Client
from shared.messages import Cancel, Cancelled, Progress, Result
from testing.serving import job_log, running_server, tiny_request, url, wait_until
from testing.training import header, outcome, train_request


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(the models folder trainings are written to, the outputs folder holding their state)."""
    return tmp_path_factory.mktemp("trained"), tmp_path_factory.mktemp("outputs")


def config(folders, models_dir, log_name: str = "jobs.log") -> ServerConfig:
    trained, outputs = folders
    return ServerConfig(models=[trained, models_dir], outputs=outputs, log_file=outputs / log_name)


def progress_until(client: Client, job_id: str, step: int) -> Progress:
    """The first progress of `job_id` at `step` or later."""
    for message in client.messages(timeout=300):
        assert not isinstance(message, (Result, Cancelled)), f"{job_id} ended before step {step}: {message}"
        if isinstance(message, Progress) and message.id == job_id and message.step >= step:
            return message
    raise AssertionError("unreachable")


def test_a_generate_runs_in_a_pause_of_a_training_which_then_finishes(folders, models_dir):
    with running_server(config(folders, models_dir)) as server, Client(url(server), name="trainer") as trainer:
        training = train_request(steps=60, checkpoint_every=1000)
        trainer.send(training)
        before = progress_until(trainer, training.id, 2).step
        with Client(url(server), name="painter") as painter:
            painted = painter.generate(tiny_request(), timeout=120)
        assert painted.images
        seen: list = []
        ended = outcome(trainer, training.id, seen=seen)
        assert isinstance(ended, Result), ended
        steps = [m.step for m in seen if isinstance(m, Progress) and m.id == training.id]
        assert steps and steps[-1] == 60 and min(steps) > before  # it went on from where it paused
        lines = job_log(server)
        assert lines[painted.id]["outcome"] == "result"
        # The generate ended while the training was still under way, and the training was not restarted.
        assert lines[painted.id]["time"] < lines[training.id]["time"]
        assert lines[training.id]["resumed_from"] == 0 and ended.info["steps"] == 60


def test_a_cancel_keeps_what_was_learnt_as_a_file(folders, models_dir):
    trained, _ = folders
    with running_server(config(folders, models_dir)) as server, Client(url(server)) as client:
        request = train_request(steps=100_000)
        client.send(request)
        progress_until(client, request.id, 3)
        client.send(Cancel(id=request.id))
        ended = outcome(client, request.id)
        assert isinstance(ended, Cancelled)
        step = int(ended.reason.split("step ")[1].split()[0])
        assert step >= 3 and request.name in ended.reason
        assert request.name in {m.name for m in client.models() if m.kind == "lora"}
        _, meta = header(trained / "loras" / f"{request.name}.safetensors")
        assert meta["ss_steps"] == str(step) and meta["ss_max_train_steps"] == "100000"


def test_a_training_cancelled_while_paused_keeps_its_file(folders, models_dir):
    """Cancelled while a generate runs in its pause: it ends itself, saving what it learnt."""
    with running_server(config(folders, models_dir)) as server, Client(url(server)) as client:
        request = train_request(steps=100_000)
        client.send(request)
        progress_until(client, request.id, 2)
        slow = tiny_request(steps=40)
        client.send(slow)
        wait_until(lambda: slow.id in server.queue.running(), what="the generate to start")
        client.send(Cancel(id=request.id))
        ended = outcome(client, request.id)
        assert isinstance(ended, Cancelled) and "saved as" in ended.reason
        assert request.name in {m.name for m in client.models() if m.kind == "lora"}


def test_a_restarted_server_resumes_a_training_from_its_checkpoint(folders, models_dir):
    trained, outputs = folders
    request = train_request(steps=40, checkpoint_every=5, name=f"resumed-{uuid.uuid4().hex[:6]}")
    with running_server(config(folders, models_dir, "first.log")) as server, Client(url(server)) as client:
        client.send(request)
        progress_until(client, request.id, 12)
    folder = checkpoints.folder_for(outputs, request)
    saved = checkpoints.load(folder)
    assert saved is not None and saved.step >= 10 and saved.step % 5 == 0
    assert not (trained / "loras" / f"{request.name}.safetensors").exists()
    with running_server(config(folders, models_dir, "second.log")) as server, Client(url(server)) as client:
        wait_until(lambda: request.name in {m.name for m in client.models()}, timeout=300,
                   what="the resumed training's file")
        wait_until(lambda: request.id in job_log(server), what="the resumed training's log line")
        line = job_log(server)[request.id]
        # The checkpoint holds everything that matters: a run without the restart learns the same tensors.
        whole = client.train(replace(request, id=uuid.uuid4().hex, name=f"{request.name}-whole"), timeout=300)
    assert (line["outcome"], line["resumed_from"], line["steps"]) == ("result", saved.step, 40)
    _, meta = header(trained / "loras" / f"{request.name}.safetensors")
    assert meta["ss_steps"] == "40"
    assert not folder.exists()
    resumed, uninterrupted = (load_file(str(trained / "loras" / f"{name}.safetensors"))
                              for name in (request.name, whole.name))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
