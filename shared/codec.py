"""Frames: one msgpack map per websocket binary frame, with a `type` naming the message.

No I/O here: bytes in, messages out (and back), so the server, the plugin and the tests
share one implementation.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import ProtocolError, bad_request
from .messages import CLIENT_MESSAGES, SERVER_MESSAGES, Error, Limits
from .schema import from_wire, to_wire

# Nesting deeper than any real message is refused before it can cost memory or recursion.
_MAX_DEPTH = 16


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
        body = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
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
        # Echo the job's id when there is one, so the client knows which request failed.
        exc.id = body.get("id") if isinstance(body.get("id"), str) else None
        raise


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
