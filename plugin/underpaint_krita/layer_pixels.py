"""Krita glue: one layer's own pixels, found by its uniqueId, as the protocol wants them.

Region masks are read from a layer's alpha, control images from its RGBA (docs/control.md), both over
the part of the canvas a request reads and whether or not the layer is visible. A group's own
pixel data is empty: its projection is what the artist sees of it.
"""

from __future__ import annotations

import struct

from shared.crop import Rect
from shared.images import swap_red_blue

SRGB = ("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")


def find_node(document, layer_id: str):
    """The layer, group or mask of a krita.Document with this uniqueId; None when there is none."""
    stack = list(document.rootNode().childNodes())
    while stack:
        node = stack.pop()
        if node.uniqueId().toString() == layer_id:
            return node
        stack.extend(node.childNodes())
    return None


def pixel_data(node, rect: Rect) -> bytes:
    """Krita's bytes of a layer (a group's projection) inside `rect`, in the node's colour space."""
    read = node.projectionPixelData if node.type() == "grouplayer" else node.pixelData
    return bytes(read(rect.x, rect.y, rect.width, rect.height))


def alpha(node, rect: Rect) -> bytes:
    """A layer's 8-bit alpha inside `rect`."""
    return _alpha(pixel_data(node, rect), len(node.channels()), node.colorDepth())


def rgba(node, rect: Rect) -> bytes:
    """A layer's straight RGBA8 inside `rect`."""
    return swap_red_blue(pixel_data(in_rgba8(node), rect))


def in_rgba8(node):
    """The node itself when it is 8-bit RGBA, else a copy converted to 8-bit sRGB: a layer is never
    converted itself."""
    if (node.colorModel(), node.colorDepth()) == ("RGBA", "U8"):
        return node
    copy = node.duplicate()
    copy.setColorSpace(*SRGB)
    return copy


def _alpha(data: bytes, channels: int, depth: str) -> bytes:
    """8-bit alpha from Krita's pixel data, whose last channel is alpha in every colour model."""
    if depth == "U8":
        return data[channels - 1::channels]
    if depth == "U16":
        return data[2 * channels - 1::2 * channels]  # little-endian: the high byte
    size, code = (2, "<e") if depth == "F16" else (4, "<f")
    stride = size * channels
    values = struct.iter_unpack(code, b"".join(data[i:i + size] for i in range(stride - size, len(data), stride)))
    return bytes(min(255, max(0, round(v * 255))) for (v,) in values)
