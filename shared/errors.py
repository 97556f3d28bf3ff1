"""The one error type of the protocol: a code the client can act on, a message a person can read,
and the field it is about."""

from __future__ import annotations

# Codes a server sends in `error` messages (documented in docs/protocol.md).
BAD_REQUEST = "bad_request"
UNKNOWN_MODEL = "unknown_model"
TOO_LARGE = "too_large"
UNSUPPORTED = "unsupported"
UNAUTHORIZED = "unauthorized"
PROTOCOL_MISMATCH = "protocol_mismatch"
EMPTY_SELECTION = "empty_selection"
NOT_FOUND = "not_found"
BUSY = "busy"
OUT_OF_MEMORY = "out_of_memory"
MODEL_BROKEN = "model_broken"
INTERNAL = "internal"


class ProtocolError(Exception):
    """A request the server cannot serve, described for the client.

    `field` is a dotted path into the request (`regions[1].mask.width`) or None when the
    problem is not about one field.
    """

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.id: str | None = None  # the request's id, when known

    def __str__(self) -> str:
        where = f" (field {self.field!r})" if self.field else ""
        return f"{self.code}: {self.message}{where}"


def bad_request(field: str, message: str) -> ProtocolError:
    return ProtocolError(BAD_REQUEST, message, field)
