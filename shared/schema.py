"""Turn plain msgpack maps into typed dataclasses and back, checking every field on the way in.

One generic codec serves every message: a message is a dataclass whose annotations say the
types, and whose field metadata (built with `spec`) says the bounds. Decoding never trusts
the input: wrong types, out-of-range numbers, over-long strings and lists all become a
`ProtocolError` naming the field path.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union

from .errors import TOO_LARGE, ProtocolError, bad_request

T = TypeVar("T")

MAX_STRING = 20_000
MAX_LIST = 64


def spec(
    default: Any = dataclasses.MISSING,
    *,
    min: float | None = None,
    max: float | None = None,
    max_len: int | None = None,
    required: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with bounds the decoder enforces.

    `required=True` makes a field mandatory on the wire even though the dataclass gives it
    a default (needed when a subclass adds a mandatory field after optional ones).
    """
    metadata = {"min": min, "max": max, "max_len": max_len, "required": required}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def to_wire(value: Any) -> Any:
    """A dataclass tree as plain maps; fields that are None are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is not None:
                out[f.name] = to_wire(item)
        return out
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(cls: type[T], data: Any, path: str = "") -> T:
    """Build `cls` from a decoded map, validating every field against its annotation."""
    if not isinstance(data, dict):
        where = path or "message"
        raise bad_request(where, f"{where} must be a map, got {_kind(data)}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        where = f"{path}.{f.name}" if path else f.name
        meta = f.metadata
        if f.name not in data or data[f.name] is None:
            mandatory = meta.get("required") or (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if mandatory:
                raise bad_request(where, f"missing field {where!r}")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name], where, meta)
    return cls(**kwargs)


def _hints(cls: type) -> dict[str, Any]:
    cached = _HINTS.get(cls)
    if cached is None:
        cached = _HINTS[cls] = typing.get_type_hints(cls)
    return cached


_HINTS: dict[type, dict[str, Any]] = {}


def _convert(tp: Any, value: Any, where: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, where, meta)
        raise TypeError(f"unsupported union in protocol schema: {tp}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or not isinstance(value, str):
            choices = ", ".join(repr(a) for a in allowed)
            raise bad_request(where, f"{where} must be one of {choices}, got {_short(value)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad_request(where, f"{where} must be a list, got {_kind(value)}")
        limit = meta.get("max_len") or MAX_LIST
        if len(value) > limit:
            raise ProtocolError(TOO_LARGE, f"{where} has {len(value)} items, at most {limit} allowed", where)
        (item_tp,) = typing.get_args(tp)
        return [_convert(item_tp, v, f"{where}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad_request(where, f"{where} must be a map, got {_kind(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_wire(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad_request(where, f"{where} must be true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(where, f"{where} must be an integer, got {_kind(value)}")
        _check_range(value, where, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad_request(where, f"{where} must be a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise bad_request(where, f"{where} must be a finite number")
        _check_range(value, where, meta)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad_request(where, f"{where} must be a string, got {_kind(value)}")
        limit = meta.get("max_len") or MAX_STRING
        if len(value) > limit:
            raise ProtocolError(TOO_LARGE, f"{where} is {len(value)} characters, at most {limit}", where)
        return value
    if tp is bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise bad_request(where, f"{where} must be binary data, got {_kind(value)}")
        return bytes(value)
    raise TypeError(f"unsupported type in protocol schema: {tp}")


def _check_range(value: float, where: str, meta: typing.Mapping[str, Any]) -> None:
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        raise bad_request(where, f"{where} must be between {low} and {high}, got {value}")


def _kind(value: Any) -> str:
    names = {dict: "a map", list: "a list", tuple: "a list", str: "a string", bytes: "binary data",
             bool: "a boolean", int: "an integer", float: "a number", type(None): "nil"}
    return names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def from_wire_lenient(cls: type[T], data: Any, path: str = "") -> tuple[T, list[ProtocolError]]:
    """Like `from_wire`, for files a person edits, where one bad value should not cost the others: a
    field that fails its check is left at its default and its error returned. A mandatory field that
    is missing or fails still raises."""
    if not isinstance(data, dict):
        where = path or "message"
        raise bad_request(where, f"{where} must be a map, got {_kind(data)}")
    hints = _hints(cls)
    kwargs, problems = {}, []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        where = f"{path}.{f.name}" if path else f.name
        mandatory = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        try:
            if data.get(f.name) is None:
                if mandatory or f.metadata.get("required"):
                    raise bad_request(where, f"missing field {where!r}")
                continue
            kwargs[f.name] = _convert(hints[f.name], data[f.name], where, f.metadata)
        except ProtocolError as exc:
            if mandatory or f.metadata.get("required"):
                raise
            problems.append(exc)
    return cls(**kwargs), problems
