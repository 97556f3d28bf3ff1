"""What can go wrong serving a request, as the server's own exceptions.

Raised anywhere in the server (loading, prompts, attention, jobs) and turned into the protocol's
`error` message in one place only, server/net/errors.py, which also attaches the request's id.
Each class stands for one error code a client can act on (docs/protocol.md); the message is for
a person and never holds a server path; `field` is the dotted request field it is about, if one.

    RequestError
    ├── BadInput
    ├── TooLarge
    ├── UnknownModel
    ├── ModelBroken
    ├── Unsupported
    ├── EmptySelection
    ├── NotFound
    ├── Busy
    ├── OutOfMemory
    ├── Unauthorized
    └── ProtocolMismatch

`shared.errors.ProtocolError` is not part of this tree: it is what the shared codec raises for a
frame that is not a valid message, before any of the server's code sees it.
"""

from __future__ import annotations

from typing import ClassVar

from shared import errors as codes


class RequestError(Exception):
    """A request the server cannot serve, with the code a client acts on."""

    code: ClassVar[str] = codes.INTERNAL

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" (field {self.field!r})" if self.field else ""
        return f"{self.code}: {self.message}{where}"


class BadInput(RequestError):
    """A value the server cannot use; `field` names it."""

    code = codes.BAD_REQUEST


class TooLarge(RequestError):
    """A value over a size limit, or one that would take longer than its time budget to read."""

    code = codes.TOO_LARGE


class UnknownModel(RequestError):
    """No model, LoRA or embedding of that name."""

    code = codes.UNKNOWN_MODEL


class ModelBroken(RequestError):
    """The model's file is there but cannot be loaded (it is listed as refused from then on)."""

    code = codes.MODEL_BROKEN


class Unsupported(RequestError):
    """Valid, but not with this model, sampler or attention."""

    code = codes.UNSUPPORTED


class EmptySelection(RequestError):
    """An inpaint mask that selects nothing."""

    code = codes.EMPTY_SELECTION


class NotFound(RequestError):
    """No such queued or running job."""

    code = codes.NOT_FOUND


class Busy(RequestError):
    """A queue or connection cap is reached, or the server is stopping."""

    code = codes.BUSY


class OutOfMemory(RequestError):
    """The device ran out of memory; the message says what to change."""

    code = codes.OUT_OF_MEMORY


class Unauthorized(RequestError):
    """A wrong or missing token, or a request before `hello`."""

    code = codes.UNAUTHORIZED


class ProtocolMismatch(RequestError):
    """The client speaks another protocol version."""

    code = codes.PROTOCOL_MISMATCH
