"""Hostile protocol frames, built from the protocol's own schema so every message type is covered,
and the property every frame must have when decoded: a valid message that survives encoding again,
or a ProtocolError with a known code, a message and a real field. tests/test_fuzz.py runs them for a
few seconds, `python -m bench.fuzz` for hundreds of thousands.

Two kinds: structured frames (hypothesis: every field of every client message given a valid value,
a value of the wrong type, a huge or negative number, wrong image data lengths, deep nesting, or
left out) and byte-level mutations of valid frames (bit flips, cut, inserted, repeated and spliced
bytes).
"""

from __future__ import annotations

import dataclasses
import random
import re
import struct
import types
import typing
from collections.abc import Callable
from typing import Any

import msgpack
from hypothesis import strategies as st

from shared import PROTOCOL_VERSION, codec, errors
from shared.codec import CLIENT_MESSAGES
from shared.errors import ProtocolError
from shared.messages import (
    Cancel,
    Generate,
    Hello,
    Image,
    ListModels,
    Live,
    LiveStop,
    Mask,
    Region,
)
from shared.png import SIGNATURE as PNG_SIGNATURE
from shared.schema import MAX_LIST, MAX_STRING

CODES = frozenset(value for name, value in vars(errors).items() if name.isupper() and isinstance(value, str))
# Fields an error may name besides the message's own fields.
FRAME_FIELDS = frozenset({"frame", "type", "message"})

# --- structured frames ---------------------------------------------------------------------------------


def _nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


HUGE = st.sampled_from([
    2**63 - 1, 2**64 - 1, -(2**63), 2**31, -(2**31) - 1, 10**18,
    float("inf"), float("-inf"), float("nan"), 1e308, -1e308, 5e-324,
    "x" * (MAX_STRING + 1), "é" * 30_000, b"\x00" * 200_000, list(range(MAX_LIST + 1)),
    _nested(40), _nested(17), _nested(15),
])
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=20),
)
HOSTILE = st.one_of(
    SCALAR, HUGE,
    st.lists(SCALAR, max_size=4), st.dictionaries(st.text(max_size=6), SCALAR, max_size=3),
    st.integers(1, 40).map(_nested),
)


def _field_types(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _bounded_int(meta: typing.Mapping[str, Any]) -> st.SearchStrategy[int]:
    low, high = meta.get("min"), meta.get("max")
    near = [v for bound in (low, high) if bound is not None for v in (int(bound) - 1, int(bound), int(bound) + 1)]
    inner = st.integers(int(low) if low is not None else -(2**20), int(high) if high is not None else 2**20)
    return st.one_of(inner, st.sampled_from(near)) if near else inner


def _image_map(cls: type[Image]) -> st.SearchStrategy[dict[str, Any]]:
    """An image payload whose data is right, one byte off, or another format's."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        width, height = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        fmt = draw(st.sampled_from([cls.RAW, "png"]))
        exact = width * height * cls.CHANNELS
        data = draw(st.one_of(
            st.just(b"\x80" * exact), st.just(b"\x80" * (exact + 1)), st.just(b"\x80" * max(0, exact - 1)),
            st.just(PNG_SIGNATURE + b"\x00" * 20), st.binary(max_size=32),
        ))
        body: dict[str, Any] = {"width": width, "height": height, "format": fmt, "data": data}
        if draw(st.booleans()):
            body["x"], body["y"] = draw(st.integers(-(2**32), 2**32)), draw(st.integers(-(2**32), 2**32))
        return body

    return build()


def value_for(tp: Any, meta: typing.Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """A value the schema accepts for `tp`, most of the time."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return st.one_of(st.none(), value_for(inner, meta))
    if origin is typing.Literal:
        return st.one_of(st.sampled_from(typing.get_args(tp)), st.text(max_size=8))
    if origin is list:
        (item,) = typing.get_args(tp)
        return st.lists(value_for(item, {}), max_size=3)
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and issubclass(tp, Image):
            return _image_map(tp)
        return message_map(tp)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return _bounded_int(meta)
    if tp is float:
        low, high = meta.get("min"), meta.get("max")
        return st.floats(low - 1 if low is not None else -1e6, high + 1 if high is not None else 1e6)
    if tp is str:
        return st.one_of(st.text(max_size=24), st.sampled_from(["tiny-sd15", "dpmpp_2m", "../x", "a/b", ""]))
    if tp is bytes:
        return st.binary(max_size=64)
    return HOSTILE


def message_map(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    """A map for `cls`: each field valid, hostile or left out, plus unknown extra fields now and then."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for f, tp in _field_types(cls):
            choice = draw(st.integers(0, 9))
            if choice == 0:
                continue  # left out
            body[f.name] = draw(HOSTILE if choice == 1 else value_for(tp, f.metadata))
        if draw(st.integers(0, 9)) == 0:
            body[draw(st.text(max_size=10))] = draw(HOSTILE)
        return body

    return build()


@st.composite
def client_body(draw: st.DrawFn) -> Any:
    """A whole frame's content: mostly a client message map, sometimes a broken `type` or a non-map."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(HOSTILE)
    cls = draw(st.sampled_from(sorted(CLIENT_MESSAGES.values(), key=lambda c: c.TYPE)))
    body = draw(message_map(cls))
    body["type"] = draw(HOSTILE) if kind == 1 else cls.TYPE
    return body


def pack(body: Any) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


structured_frames = client_body().map(pack)

# --- byte-level mutations ---------------------------------------------------------------------------------


def seed_frames() -> list[bytes]:
    """One valid frame of every client message type, the larger ones with every optional part."""
    image = Image(width=4, height=3, format="rgba8", data=bytes(range(48)), x=10, y=-5)
    mask = Mask(width=4, height=3, format="a8", data=b"\xff" * 12)
    full = dict(id="job-1", model="tiny-sd15", prompt="a red circle", negative_prompt="blurry", width=64,
                height=64, image=image, mask=mask, strength=0.5, steps=2, cfg_scale=5.0, scheduler="euler",
                seed=7, batch_size=2, preview=True, fit_native=True, result_format="png", grow=4, feather=8,
                regions=[Region(mask=mask, prompt="sky", negative_prompt="birds")])
    messages = [
        Hello(protocol=PROTOCOL_VERSION, client="fuzz", token="secret"),
        ListModels(),
        Generate(id="job-0", mode="txt2img", model="tiny-sd15", prompt="a cat"),
        Generate(mode="inpaint", **full),
        Cancel(id="job-1"),
        Live(mode="img2img", session="s1", **{**full, "regions": []}),
        LiveStop(session="s1"),
    ]
    return [codec.encode(message) for message in messages]


_INTERESTING = [0x00, 0x7F, 0x80, 0x90, 0xA0, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xCA, 0xCB, 0xCC, 0xCF, 0xD0,
                0xD3, 0xD4, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFF]


def _flip(frame: bytearray, rng: random.Random, _: list[bytes]) -> None:
    if frame:
        frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)


def _set(frame: bytearray, rng: random.Random, _: list[bytes]) -> None:
    if frame:
        frame[rng.randrange(len(frame))] = rng.choice(_INTERESTING) if rng.random() < 0.5 else rng.randrange(256)


def _insert(frame: bytearray, rng: random.Random, _: list[bytes]) -> None:
    at = rng.randrange(len(frame) + 1)
    frame[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))


def _delete(frame: bytearray, rng: random.Random, _: list[bytes]) -> None:
    if frame:
        at = rng.randrange(len(frame))
        del frame[at:at + rng.randint(1, 16)]


def _truncate(frame: bytearray, rng: random.Random, _: list[bytes]) -> None:
    del frame[rng.randrange(len(frame) + 1):]


def _repeat(frame: bytearray, rng: random.Random, _: list[bytes]) -> None:
    if frame:
        at = rng.randrange(len(frame))
        chunk = frame[at:at + rng.randint(1, 32)]
        frame[at:at] = chunk * rng.randint(1, 50)


def _splice(frame: bytearray, rng: random.Random, seeds: list[bytes]) -> None:
    other = rng.choice(seeds)
    at, start = rng.randrange(len(frame) + 1), rng.randrange(len(other))
    frame[at:] = other[start:]


def _length(frame: bytearray, rng: random.Random, _: list[bytes]) -> None:
    """A container or string header claiming a length far from the truth."""
    at = rng.randrange(len(frame) + 1)
    header = rng.choice([b"\xdc", b"\xdd", b"\xde", b"\xdf", b"\xda", b"\xdb", b"\xc5", b"\xc6"])
    size = 2 if header in (b"\xdc", b"\xde", b"\xda", b"\xc5") else 4
    frame[at:at] = header + rng.randrange(256**size).to_bytes(size, "big")


def _number(frame: bytearray, rng: random.Random, _: list[bytes]) -> None:
    """A number where one stood, replaced by an extreme one of another msgpack type."""
    at = rng.randrange(len(frame) + 1)
    frame[at:at] = rng.choice([
        b"\xcf" + struct.pack(">Q", 2**64 - 1), b"\xd3" + struct.pack(">q", -(2**63)),
        b"\xcb" + struct.pack(">d", float("nan")), b"\xcb" + struct.pack(">d", float("inf")),
        b"\xca" + struct.pack(">f", -1e38), b"\xd0\x80",
    ])


MUTATIONS: list[Callable[[bytearray, random.Random, list[bytes]], None]] = [
    _flip, _set, _insert, _delete, _truncate, _repeat, _splice, _length, _number,
]


def mutate(frame: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    """`frame` with 1 to 4 random mutations applied."""
    out = bytearray(frame)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        rng.choice(MUTATIONS)(out, rng, seeds)
    return bytes(out)


# --- the property ------------------------------------------------------------------------------------------


def check_frame(frame: bytes) -> ProtocolError | Any:
    """Decode `frame` as the server does and check the outcome; AssertionError names what is wrong.

    Returns the decoded message, or the ProtocolError the server would answer with.
    """
    try:
        message = codec.decode_client(frame)
    except ProtocolError as exc:
        assert exc.code in CODES, f"unknown error code {exc.code!r}"
        assert isinstance(exc.message, str) and exc.message, "an error without a message"
        assert exc.id is None or isinstance(exc.id, str), f"error id {exc.id!r} is not a string"
        if exc.field is not None:
            root = re.split(r"[.\[]", exc.field)[0]
            assert root in FRAME_FIELDS or root in _FIELDS, f"error names unknown field {exc.field!r}"
        reply = codec.decode_server(codec.encode(codec.error_message(exc)))
        assert (reply.code, reply.field, reply.id) == (exc.code, exc.field, exc.id), "error does not round-trip"
        return exc
    assert type(message) in CLIENT_MESSAGES.values(), f"decoded to {type(message).__name__}"
    again = codec.decode_client(codec.encode(message))
    assert again == message, "a decoded message does not survive encoding and decoding again"
    return message


_FIELDS = frozenset(f.name for cls in CLIENT_MESSAGES.values() for f in dataclasses.fields(cls))
