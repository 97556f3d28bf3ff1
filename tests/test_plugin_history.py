"""A document's result history: PNG-compressed, bounded, and stored as one blob."""

from __future__ import annotations

import msgpack
import pytest
from plugin_support import solid
from underpaint_krita.history import Entry, History

from shared.messages import Generate, Image


def _entry(entry_id: str, side: int = 8, colour: tuple[int, int, int, int] = (200, 10, 10, 255),
           noisy: bool = False) -> Entry:
    data = bytes((i * 7919) % 256 for i in range(side * side * 4)) if noisy else solid(side, side, colour)
    image = Image(width=side, height=side, format="rgba8", data=data, x=3, y=4)
    request = Generate(id="job", mode="inpaint", model="tiny-sd15", prompt="a fox", negative_prompt="blur",
                       strength=0.6)
    return Entry.from_result(entry_id, request, image, seed=11)


def test_entry_keeps_pixels_position_and_parameters() -> None:
    entry = _entry("a")
    image = entry.image()
    assert (image.x, image.y, image.width, image.height) == (3, 4, 8, 8)
    assert image.data == solid(8, 8, (200, 10, 10, 255))
    assert (entry.prompt, entry.negative_prompt, entry.model, entry.mode, entry.strength, entry.seed) == (
        "a fox", "blur", "tiny-sd15", "inpaint", 0.6, 11)
    assert len(entry.png) < 8 * 8 * 4  # stored compressed


def test_strength_defaults_to_full_when_the_request_left_it_out() -> None:
    image = Image(width=1, height=1, format="rgba8", data=bytes(4))
    entry = Entry.from_result("a", Generate(id="j", mode="txt2img", model="m"), image, seed=1)
    assert entry.strength == 1.0


def test_png_results_are_refused_with_the_format_named() -> None:
    image = Image(width=1, height=1, format="png", data=b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="'png'"):
        Entry.from_result("a", Generate(id="j", mode="txt2img", model="m"), image, seed=1)


def test_add_get_remove() -> None:
    history = History()
    history.add(_entry("a"))
    history.add(_entry("b"))
    assert [e.id for e in history] == ["a", "b"] and len(history) == 2
    assert history.get("b").id == "b" and history.get("zz") is None
    assert history.remove("a").id == "a"
    assert history.remove("a") is None
    assert [e.id for e in history] == ["b"]


def test_newest_job_first_with_batches_in_order() -> None:
    history = History()
    for entry_id in ["a-0", "a-1", "b-0", "c-0", "c-1", "c-2"]:
        history.add(_entry(entry_id))
    assert [e.id for e in history.newest_first()] == ["c-0", "c-1", "c-2", "b-0", "a-0", "a-1"]


def test_oldest_entries_are_dropped_beyond_the_limit() -> None:
    one = _entry("x", side=32, noisy=True).size
    history = History(limit=3 * one + one // 2)
    dropped = [history.add(_entry(str(i), side=32, noisy=True)) for i in range(5)]
    assert [e.id for e in history] == ["2", "3", "4"]
    assert [[e.id for e in d] for d in dropped] == [[], [], [], ["0"], ["1"]]
    assert history.size <= history.limit


def test_the_newest_entry_stays_even_when_alone_over_the_limit() -> None:
    history = History(limit=10)
    history.add(_entry("a"))
    dropped = history.add(_entry("b"))
    assert [e.id for e in history] == ["b"] and [e.id for e in dropped] == ["a"]


def test_blob_round_trip() -> None:
    history = History()
    for name in "abc":
        history.add(_entry(name))
    history.remove("b")
    restored = History.from_blob(history.to_blob(), limit=1234)
    assert restored.limit == 1234
    assert [e.id for e in restored] == ["a", "c"]
    assert [e.image() for e in restored] == [e.image() for e in history]
    assert list(restored) == list(history)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"\xc1\xc1", "not readable"),
        (msgpack.packb([1, 2]), "not an Underpaint history"),
        (msgpack.packb({"format": "other"}), "not an Underpaint history"),
        (msgpack.packb({"format": "underpaint-history", "version": 99, "entries": []}), "version 99"),
        (msgpack.packb({"format": "underpaint-history", "version": 1, "entries": [{"id": "a"}]}), "incomplete"),
    ],
)
def test_bad_blobs_are_refused_with_a_reason(blob: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        History.from_blob(blob)
