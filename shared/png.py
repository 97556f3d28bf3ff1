"""The few facts about a PNG file a client needs without decoding it, and its chunks."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; ValueError if `data` is not a PNG."""
    if not data.startswith(SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 24:
        raise ValueError("not a PNG file")
    return struct.unpack(">II", data[16:24])


def chunk(kind: bytes, body: bytes) -> bytes:
    """One chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_text(data: bytes, keyword: str, text: str) -> bytes:
    """The PNG `data` with a text chunk `keyword` right after its header, the pixels untouched:
    tEXt when the text is Latin-1 (what every reader knows), else UTF-8 iTXt."""
    png_size(data)  # a PNG at all, with its header first
    header_end = len(SIGNATURE) + 8 + 13 + 4
    try:
        body = keyword.encode("latin-1") + b"\0" + text.encode("latin-1")
        kind = b"tEXt"
    except UnicodeEncodeError:
        body = keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
        kind = b"iTXt"
    return data[:header_end] + chunk(kind, body) + data[header_end:]
