"""Frames: one msgpack map per websocket binary frame, with a `type` naming the message.

No I/O here: bytes in, messages out (and back), so the server, the plugin and the tests
share one implementation.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import TOO_LARGE, ProtocolError, bad_request
from .messages import (
    ID_LENGTH,
    Cancel,
    Cancelled,
    Error,
    Finalize,
    Generate,
    Hello,
    Limits,
    ListModels,
    Live,
    LiveStop,
    LiveStopped,
    ModelList,
    Preprocess,
    Progress,
    Queued,
    Result,
    Welcome,
)
from .schema import from_wire, to_wire
from .training import Train

CLIENT_MESSAGES: dict[str, type] = {
    cls.TYPE: cls for cls in (Hello, ListModels, Generate, Cancel, Live, LiveStop, Finalize, Preprocess, Train)
}
SERVER_MESSAGES: dict[str, type] = {
    cls.TYPE: cls for cls in (Welcome, ModelList, Queued, Progress, Result, Cancelled, Error, LiveStopped)
}

# Nesting deeper than any real message is refused before it can cost memory or recursion.
_MAX_DEPTH = 16
# List items plus map entries in one frame, and the longest string, counted while unpacking: a frame of
# nested empty lists or nils would otherwise grow about 70-fold in memory and hold the server's event
# loop for seconds per megabyte. Real frames hold a few dozen items; their bulk is binary image data.
_MAX_ITEMS = 100_000
_MAX_STRING_BYTES = 1024 * 1024


class _TooManyItems(Exception):
    pass


def encode(message: Any) -> bytes:
    """One frame for a message dataclass."""
    body = to_wire(message)
    body["type"] = message.TYPE
    return msgpack.packb(body, use_bin_type=True)


def decode_client(frame: bytes | str, limits: Limits | None = None) -> Any:
    """A client's frame as a validated message; ProtocolError names what is wrong."""
    message = _decode(frame, CLIENT_MESSAGES)
    check = getattr(message, "check", None)
    if check is not None:
        try:
            check(limits or Limits())
        except ProtocolError as exc:
            exc.id = getattr(message, "id", None)
            raise
    return message


def decode_server(frame: bytes | str) -> Any:
    """A server's frame as a message (clients use this)."""
    return _decode(frame, SERVER_MESSAGES)


def _decode(frame: bytes | str, registry: dict[str, type]) -> Any:
    if isinstance(frame, str):
        raise bad_request("frame", "text frames are not part of the protocol; send msgpack in binary frames")
    try:
        body = _unpack(frame)
    except _TooManyItems:
        raise ProtocolError(TOO_LARGE, f"the frame holds more than {_MAX_ITEMS} list items and map entries",
                            "frame") from None
    except ValueError as exc:
        if "exceeds max_" not in str(exc):
            raise bad_request("frame", f"the frame is not valid msgpack ({type(exc).__name__})") from None
        raise ProtocolError(TOO_LARGE, "the frame has a list, map or string longer than the protocol allows",
                            "frame") from None
    except Exception as exc:  # msgpack raises a zoo of types for bad bytes
        raise bad_request("frame", f"the frame is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise bad_request("frame", "a frame must be a msgpack map with a 'type'")
    if _depth(body) > _MAX_DEPTH:
        raise bad_request("frame", f"the frame nests deeper than {_MAX_DEPTH} levels")
    kind = body.get("type")
    if not isinstance(kind, str):
        raise bad_request("type", "missing field 'type'")
    cls = registry.get(kind)
    if cls is None:
        known = ", ".join(sorted(registry))
        raise bad_request("type", f"unknown message type {kind[:40]!r}; known types: {known}")
    try:
        return from_wire(cls, body)
    except ProtocolError as exc:
        # Echo the job's id when there is one, so the client knows which request failed; an id that is
        # itself invalid is not echoed (a client could not decode the reply).
        job_id = body.get("id")
        exc.id = job_id if isinstance(job_id, str) and len(job_id) <= ID_LENGTH else None
        raise


def _unpack(frame: bytes) -> Any:
    left = _MAX_ITEMS

    def count(container: Any) -> Any:
        nonlocal left
        left -= len(container) + 1
        if left < 0:
            raise _TooManyItems
        return container

    return msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True, list_hook=count,
                           object_hook=count, max_array_len=_MAX_ITEMS, max_map_len=_MAX_ITEMS,
                           max_str_len=_MAX_STRING_BYTES)


def _depth(value: Any) -> int:
    # Iterative, so hostile nesting cannot exhaust Python's recursion limit.
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > _MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def error_message(exc: ProtocolError) -> Error:
    return Error(code=exc.code, message=exc.message, id=exc.id, field=exc.field)
