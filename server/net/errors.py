"""The one place a failure becomes the `error` message a client reads, with the id of its request.

Server errors (server/errors.py) say their code, message and field; the shared codec's
ProtocolError does the same for a frame that is not a valid message. Anything else is a bug: its
traceback goes to the log and the client gets `internal` with a plain message, never the
exception's text, which may hold paths or other details of this machine.
"""

from __future__ import annotations

import logging

from shared import errors as codes
from shared.errors import ProtocolError
from shared.messages import Error

from ..errors import RequestError
from ..jobs.job import Job

log = logging.getLogger("underpaint.server")
jobs_log = logging.getLogger("underpaint.jobs")


def for_frame(exc: ProtocolError) -> Error:
    """A frame the codec refused; the codec found the request's id, if it had a valid one."""
    return Error(code=exc.code, message=exc.message, id=exc.id, field=exc.field)


def for_message(exc: Exception, request_id: str | None = None) -> Error:
    """A decoded message the server refused, or failed to handle."""
    if isinstance(exc, RequestError):
        return Error(code=exc.code, message=exc.message, id=request_id, field=exc.field)
    log.exception("unexpected failure handling a message")
    return Error(code=codes.INTERNAL, message="the server could not handle this message", id=request_id)


def for_job(job: Job, exc: Exception) -> Error:
    """An accepted job that failed while it ran."""
    if isinstance(exc, RequestError):
        return Error(code=exc.code, message=exc.message, id=job.id, field=exc.field)
    jobs_log.exception("job %s failed", job.id)
    return Error(code=codes.INTERNAL, message="the server failed to run this job; see its log", id=job.id)
