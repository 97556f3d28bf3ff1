"""One structured line per job in a log file that rotates (`underpaint serve --log-file PATH`).

Each line is a JSON object: when the job ended, its id, mode, model, size, steps, batch size,
how long it waited in the queue and ran (a training: its last run, after its last pause), and its
outcome (`result`, `cancelled` or `error`, with the error code or the cancel reason); a live frame's
how its start picture was encoded (`start_encode`: reused, tiles or whole; docs/live.md). Prompts and
images are never written: the log is for diagnosing the server, not a record of what people painted.
"""

from __future__ import annotations

import datetime
import json
import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from shared.messages import Cancelled, Error, Result
from shared.training import Train

from .job import Job

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


def job_line(job: Job, message: Any, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The log record of a job that ended with `message`."""
    request = job.request
    if isinstance(request, Train):
        return _training_line(job, request, message, now)
    if isinstance(message, Result):
        width, height = message.info.get("width"), message.info.get("height")
    elif request.image is not None:
        width, height = request.image.width, request.image.height
    else:
        width, height = request.width, request.height
    line: dict[str, Any] = {
        "time": (now or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="milliseconds"),
        "id": job.id,
        "mode": request.mode,
        "model": request.model,
        "size": f"{width}x{height}" if width and height else None,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "wait_s": _seconds(job.queued_at, job.started_at),
        "run_s": _seconds(job.started_at, job.ended_at),
        "outcome": message.TYPE,
    }
    if job.session is not None:
        line["session"] = job.session
    if job.worker is not None:
        line["worker"] = job.worker
    if job.attempts > 1:
        line["attempts"] = job.attempts
    if job.finalize:
        line["finalize"] = True
    if isinstance(message, Result) and "start_encode" in message.info:
        line["start_encode"] = message.info["start_encode"]
    return line | _outcome(message)


def _outcome(message: Any) -> dict[str, Any]:
    if isinstance(message, Error):
        return {"code": message.code}
    if isinstance(message, Cancelled) and message.reason:
        return {"reason": message.reason}
    return {}


def _training_line(job: Job, request: Train, message: Any, now: datetime.datetime | None) -> dict[str, Any]:
    """A training's record: its kind, base model and steps, and from which step it resumed."""
    line: dict[str, Any] = {
        "time": (now or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="milliseconds"),
        "id": job.id,
        "mode": "train",
        "kind": request.kind,
        "model": request.model,
        "steps": job.step,
        "wait_s": _seconds(job.queued_at, job.started_at),
        "run_s": _seconds(job.started_at, job.ended_at),
        "outcome": message.TYPE,
    }
    if isinstance(message, Result):
        line["resumed_from"] = message.info.get("resumed_from")
    return line | _outcome(message)


def _seconds(start: float | None, end: float | None) -> float | None:
    return round(end - start, 4) if start is not None and end is not None else None


class JobLog:
    """Appends job lines to `path`; past `max_bytes` the file is renamed `path.1` (and so on, up to
    `backups` old files) and a new one is started."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # A logger of its own, outside logging's tree: job lines go to this file only, not to the console.
        self._logger = logging.Logger("underpaint.joblog")
        self._logger.addHandler(self._handler)

    def record(self, job: Job, message: Any) -> None:
        self._logger.info(json.dumps(job_line(job, message), ensure_ascii=False))

    def close(self) -> None:
        self._handler.close()
