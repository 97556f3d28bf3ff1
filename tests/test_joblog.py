"""The job log: one JSON line per job, rotated by size, written by a running server."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest

from server.config import ServerConfig
from server.jobs.job import Job
from server.jobs.log import JobLog, job_line
from shared.client import Client
from shared.messages import Cancel, Cancelled, Error, Generate, Image, Result
from testing.serving import running_server, url

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=datetime.timezone.utc)


def make_job(request: Generate, queued: float | None = 10.0, started: float | None = None,
             ended: float | None = None, session: str | None = None) -> Job:
    job = Job(request=request, owner=1, reply=lambda message: None, session=session)
    job.queued_at, job.started_at, job.ended_at = queued, started, ended
    return job


TXT2IMG = Generate(id="a", mode="txt2img", model="tiny-sd15", prompt="secret", width=70, height=45, steps=4)
IMG2IMG = Generate(id="b", mode="img2img", model="m", steps=9, batch_size=2,
                   image=Image(width=3, height=2, format="rgba8", data=b"\x00" * 24))
NATIVE = Generate(id="c", mode="txt2img", model="m")

CASES = [
    ("result reports the size made", make_job(TXT2IMG, 10.0, 10.5, 12.25),
     Result(id="a", images=[], info={"width": 72, "height": 48}, elapsed=1.75),
     {"size": "72x48", "wait_s": 0.5, "run_s": 1.75, "outcome": "result", "steps": 4}),
    ("cancelled while waiting never ran", make_job(IMG2IMG, 10.0, None, 11.0),
     Cancelled(id="b", reason="client disconnected"),
     {"size": "3x2", "wait_s": None, "run_s": None, "outcome": "cancelled", "reason": "client disconnected",
      "batch_size": 2}),
    ("error carries its code", make_job(NATIVE, 10.0, 10.0, 10.1),
     Error(code="out_of_memory", message="...", id="c"),
     {"size": None, "outcome": "error", "code": "out_of_memory", "run_s": 0.1}),
    ("live frames name their session", make_job(IMG2IMG, 1.0, 2.0, 3.0, session="s1"),
     Cancelled(id="b", reason="superseded"), {"session": "s1", "reason": "superseded"}),
    ("and how their start picture was encoded", make_job(IMG2IMG, 1.0, 2.0, 3.0, session="s1"),
     Result(id="b", images=[], info={"start_encode": "tiles", "tile_error": 0.0001}, elapsed=1.0),
     {"session": "s1", "start_encode": "tiles", "tile_error": None}),
]


@pytest.mark.parametrize(("job", "message", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_job_line(job, message, expected):
    line = job_line(job, message, now=NOW)
    assert line["time"] == "2026-05-01T12:00:00.250+00:00"
    assert line["id"] == job.id and line["mode"] == job.request.mode and line["model"] == job.request.model
    assert {key: line.get(key) for key in expected} == expected
    assert "prompt" not in line and "secret" not in json.dumps(line)


def test_the_log_rotates_by_size_and_keeps_a_few_old_files(tmp_path):
    log = JobLog(tmp_path / "logs" / "jobs.log", max_bytes=1000, backups=2)
    job = make_job(TXT2IMG, 1.0, 2.0, 3.0)
    for _ in range(60):
        log.record(job, Cancelled(id="a"))
    log.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["jobs.log", "jobs.log.1", "jobs.log.2"]
    for name in files:
        path = tmp_path / "logs" / name
        assert path.stat().st_size <= 1000
        assert all(json.loads(line)["id"] == "a" for line in path.read_text().splitlines())


def test_a_server_writes_one_line_per_job(models_dir, tmp_path):
    config = ServerConfig(models=[models_dir], outputs=tmp_path / "outputs", log_file=tmp_path / "jobs.log")
    done, cancelled = (Generate(id=uuid.uuid4().hex, mode="txt2img", model="tiny-sd15", prompt="a private idea",
                                width=64, height=64, steps=steps) for steps in (1, 150))
    with running_server(config) as server, Client(url(server)) as client:
        client.generate(done, timeout=120)
        client.send(cancelled)
        client.send(Cancel(id=cancelled.id))
        for message in client.messages(timeout=60):
            if isinstance(message, Cancelled) and message.id == cancelled.id:
                break
    text = (tmp_path / "jobs.log").read_text()
    lines = {line["id"]: line for line in map(json.loads, text.splitlines())}
    assert lines[done.id]["outcome"] == "result" and lines[done.id]["size"] == "64x64"
    assert lines[cancelled.id]["outcome"] == "cancelled"
    assert len(lines) == 2 and "private" not in text
