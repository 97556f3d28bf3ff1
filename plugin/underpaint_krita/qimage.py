"""Pixels between the protocol's `Image` (straight RGBA, 8 bits) and Qt's `QImage`."""

from __future__ import annotations

from shared.messages import Image

from .qt import QByteArray, QImage, Qt
from .training import fitted_size

# Krita's thumbnails sample without smoothing: one this many times the size, smoothed down by Qt,
# keeps a shrunk picture's lines.
OVERSAMPLE = 2


def from_image(image: Image) -> QImage:
    """A QImage owning a copy of the pixels (a QImage made over bytes only borrows them)."""
    return QImage(image.data, image.width, image.height, image.width * 4, QImage.Format.Format_RGBA8888).copy()


def as_rgba8(image: Image) -> Image:
    """`image` with rgba8 pixels: a png payload decoded by Qt (the server sends large results as png)."""
    if image.format == "rgba8":
        return image
    decoded = QImage.fromData(QByteArray(image.data), "PNG")
    if decoded.isNull() or (decoded.width(), decoded.height()) != (image.width, image.height):
        raise ValueError(f"the result is not a readable {image.width}x{image.height} PNG")
    return Image(width=image.width, height=image.height, format="rgba8", data=rgba_bytes(decoded), x=image.x,
                 y=image.y)


def pixel_bytes(image: QImage) -> bytes:
    """The QImage's pixel buffer as it is, in its own format."""
    bits = image.constBits()
    bits.setsize(image.sizeInBytes())
    return bytes(bits)


def rgba_bytes(image: QImage) -> bytes:
    """Straight RGBA bytes of any QImage, rows without padding."""
    return pixel_bytes(image.convertToFormat(QImage.Format.Format_RGBA8888))


def thumbnail_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The size to ask Krita's thumbnail for, to shrink a width x height picture to `side`² (shrunk)."""
    fitted = fitted_size(width, height, side)
    return min(width, fitted[0] * OVERSAMPLE), min(height, fitted[1] * OVERSAMPLE)


def shrunk(image: QImage, side: int) -> Image:
    """The picture as rgba8, smoothly shrunk (keeping its aspect) to at most side² pixels."""
    width, height = fitted_size(image.width(), image.height(), side)
    if (width, height) != (image.width(), image.height()):
        image = image.scaled(width, height, Qt.AspectRatioMode.IgnoreAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
    return Image(width=width, height=height, format="rgba8", data=rgba_bytes(image))
