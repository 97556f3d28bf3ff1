"""shared/images.py: the pixel helpers the Krita plugin runs without numpy."""

from __future__ import annotations

import struct
import time
import zlib

import pytest

from shared.images import crop, decode_png, encode_png, swap_red_blue, transparent


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", b""),
        (bytes([1, 2, 3, 4]), bytes([3, 2, 1, 4])),
        (bytes([0, 0, 255, 255, 10, 20, 30, 40]), bytes([255, 0, 0, 255, 30, 20, 10, 40])),
    ],
)
def test_swap_red_blue(data: bytes, expected: bytes) -> None:
    assert swap_red_blue(data) == expected
    assert swap_red_blue(expected) == data


def test_swap_refuses_partial_pixels() -> None:
    with pytest.raises(ValueError, match="4 bytes each"):
        swap_red_blue(b"\x00" * 6)


def _numbered(width: int, height: int, channels: int) -> bytes:
    return bytes((i // channels) % 251 for i in range(width * height * channels))


@pytest.mark.parametrize(
    "x, y, w, h, channels",
    [(0, 0, 5, 4, 4), (1, 2, 3, 2, 4), (4, 3, 1, 1, 4), (2, 1, 0, 2, 4), (1, 1, 3, 3, 1)],
)
def test_crop_matches_pixel_by_pixel(x: int, y: int, w: int, h: int, channels: int) -> None:
    width, height = 5, 4
    data = _numbered(width, height, channels)
    expected = b"".join(
        data[((row * width) + col) * channels:((row * width) + col + 1) * channels]
        for row in range(y, y + h) for col in range(x, x + w)
    )
    assert crop(data, width, x, y, w, h, channels) == expected


@pytest.mark.parametrize("x, y, w, h", [(-1, 0, 2, 2), (4, 0, 2, 1), (0, 3, 1, 2)])
def test_crop_outside_the_image_names_the_sizes(x: int, y: int, w: int, h: int) -> None:
    with pytest.raises(ValueError, match="not inside the 5x4 image"):
        crop(bytes(5 * 4 * 4), 5, x, y, w, h)


def test_png_round_trip_and_format() -> None:
    width, height = 7, 3
    data = _numbered(width, height, 4)
    png = encode_png(data, width, height)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert decode_png(png) == (width, height, data)
    assert decode_png(encode_png(transparent(1, 1), 1, 1)) == (1, 1, bytes(4))


def test_png_opens_in_pillow() -> None:
    PIL = pytest.importorskip("PIL.Image")
    import io

    data = _numbered(6, 5, 4)
    pillow = PIL.open(io.BytesIO(encode_png(data, 6, 5)))
    assert pillow.mode == "RGBA" and pillow.size == (6, 5) and pillow.tobytes() == data


def _png(header: bytes, raw: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "png, message",
    [
        (b"GIF89a", "not a PNG"),
        (b"\x89PNG\r\n\x1a\n", "no IHDR"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00", "truncated"),
    ],
)
def test_png_decode_errors(png: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_png(png)


@pytest.mark.parametrize(
    "depth, colour, filter_type, message",
    [
        (8, 2, 0, "colour type 2"),
        (16, 6, 0, "depth 16"),
        (8, 6, 1, "filter type None"),
    ],
)
def test_png_decode_refuses_what_it_cannot_read(depth: int, colour: int, filter_type: int, message: str) -> None:
    header = struct.pack(">IIBBBBB", 1, 1, depth, colour, 0, 0, 0)
    with pytest.raises(ValueError, match=message):
        decode_png(_png(header, bytes([filter_type, 1, 2, 3, 4])))


def test_png_decode_checks_the_pixel_data_size() -> None:
    header = struct.pack(">IIBBBBB", 2, 1, 8, 6, 0, 0, 0)
    with pytest.raises(ValueError, match="wrong size"):
        decode_png(_png(header, bytes([0, 1, 2, 3, 4])))


def test_large_buffers_are_fast() -> None:
    """A 2048x2048 canvas: the swap and a crop run in C loops, well under a frame of a second."""
    data = bytes(range(256)) * (2048 * 2048 * 4 // 256)
    start = time.perf_counter()
    swap_red_blue(data)
    crop(data, 2048, 100, 100, 1024, 1024)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, elapsed
