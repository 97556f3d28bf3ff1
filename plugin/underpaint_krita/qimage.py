"""Pixels between the protocol's `Image` (straight RGBA, 8 bits) and Qt's `QImage`."""

from __future__ import annotations

from shared.messages import Image

from .qt import QImage


def from_image(image: Image) -> QImage:
    """A QImage owning a copy of the pixels (a QImage made over bytes only borrows them)."""
    return QImage(image.data, image.width, image.height, image.width * 4, QImage.Format.Format_RGBA8888).copy()


def pixel_bytes(image: QImage) -> bytes:
    """The QImage's pixel buffer as it is, in its own format."""
    bits = image.constBits()
    bits.setsize(image.sizeInBytes())
    return bytes(bits)


def rgba_bytes(image: QImage) -> bytes:
    """Straight RGBA bytes of any QImage, rows without padding."""
    return pixel_bytes(image.convertToFormat(QImage.Format.Format_RGBA8888))
