"""Pixel buffers as plain bytes: channel order, crops, alpha and a minimal PNG codec.

The Krita plugin runs in Krita's own Python without numpy, so every function works on
`bytes` with slice assignment (C loops inside CPython) instead of per-pixel Python loops:
a 2048x2048 RGBA swap takes milliseconds, not seconds.
"""

from __future__ import annotations

import struct
import zlib

from .png import SIGNATURE, chunk

RGBA = 4


def swap_red_blue(data: bytes) -> bytes:
    """BGRA <-> RGBA (the same swap both ways): Krita's 8-bit layers are BGRA, the protocol is RGBA."""
    _check_multiple(len(data), RGBA, "pixel data")
    out = bytearray(data)
    out[0::4] = data[2::4]
    out[2::4] = data[0::4]
    return bytes(out)


def crop(data: bytes, width: int, x: int, y: int, crop_width: int, crop_height: int,
         channels: int = RGBA) -> bytes:
    """The rectangle (x, y, crop_width, crop_height) of a row-major image `width` pixels wide."""
    height = _height(data, width, channels)
    if x < 0 or y < 0 or crop_width < 0 or crop_height < 0 or x + crop_width > width or y + crop_height > height:
        raise ValueError(
            f"crop ({x}, {y}, {crop_width}x{crop_height}) is not inside the {width}x{height} image"
        )
    stride, start, length = width * channels, x * channels, crop_width * channels
    return b"".join(
        data[row * stride + start: row * stride + start + length] for row in range(y, y + crop_height)
    )


def transparent(width: int, height: int) -> bytes:
    return bytes(width * height * RGBA)


def encode_png(rgba: bytes, width: int, height: int, level: int = 6) -> bytes:
    """An 8-bit RGBA PNG of straight RGBA rows (filter type None: fast to write and to read back)."""
    if _height(rgba, width, RGBA) != height:
        raise ValueError(f"{len(rgba)} bytes is not a {width}x{height} RGBA image")
    stride = width * RGBA
    raw = b"".join(b"\x00" + rgba[row * stride:(row + 1) * stride] for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, level)) + chunk(b"IEND", b"")


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, RGBA rows) of a PNG written by `encode_png`.

    Accepts any 8-bit RGBA, non-interlaced PNG whose rows use filter type None; other PNGs
    raise ValueError saying what is not supported (decoding them needs a real image library).
    """
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG file")
    pos, header, idat = len(SIGNATURE), None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise ValueError("the PNG file is truncated")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("the PNG file has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if (depth, colour, interlace) != (8, 6, 0):
        raise ValueError(f"only 8-bit RGBA non-interlaced PNGs are supported (depth {depth}, colour type "
                         f"{colour}, interlace {interlace})")
    raw = zlib.decompress(b"".join(idat))
    stride = width * RGBA + 1
    if len(raw) != stride * height:
        raise ValueError("the PNG file's pixel data has the wrong size")
    if any(raw[row * stride] for row in range(height)):
        raise ValueError("only PNG rows with filter type None are supported")
    return width, height, b"".join(raw[row * stride + 1:(row + 1) * stride] for row in range(height))


def _height(data: bytes, width: int, channels: int) -> int:
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    _check_multiple(len(data), width * channels, f"a {width} pixels wide image")
    return len(data) // (width * channels)


def _check_multiple(size: int, unit: int, what: str) -> None:
    if size % unit:
        raise ValueError(f"{size} bytes is not a whole number of rows/pixels for {what} ({unit} bytes each)")
