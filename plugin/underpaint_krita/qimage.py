"""Pixels between the protocol's `Image` (straight RGBA, 8 bits) and Qt's `QImage`."""

from __future__ import annotations

from collections.abc import Callable

from shared.messages import Image

from .qt import QByteArray, QImage, Qt
from .training import fitted_size

# What a large layer is read in at a time to be shrunk: a 4096² layer is 64 MB whole.
BAND_BYTES = 8 * 1024 * 1024


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


def shrunk(image: QImage, side: int) -> Image:
    """The picture as rgba8, smoothly shrunk (keeping its aspect) to at most side² pixels."""
    width, height = fitted_size(image.width(), image.height(), side)
    if (width, height) != (image.width(), image.height()):
        image = image.scaled(width, height, Qt.AspectRatioMode.IgnoreAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
    return to_image(image)


def to_image(image: QImage) -> Image:
    """Any QImage as an rgba8 `Image` at (0, 0)."""
    return Image(width=image.width(), height=image.height(), format="rgba8", data=rgba_bytes(image))


def shrunk_in_bands(read_rows: Callable[[int, int], QImage], width: int, height: int, side: int,
                    band_bytes: int = BAND_BYTES,
                    fit: Callable[[int, int, int], tuple[int, int]] = fitted_size) -> Image:
    """A width x height picture read `read_rows(y, rows)` a band of at most `band_bytes` (as 8-bit RGBA)
    at a time, as rgba8 shrunk like `shrunk` (or to the size `fit(width, height, side)` gives). Each
    band is shrunk to the whole output rows it covers, so reading takes one band's memory, whatever the
    picture's size."""
    out_width, out_height = fit(width, height, side)
    step = max(1, band_bytes // (width * 4))
    rows = []
    for y in range(0, height, step):
        count = min(step, height - y)
        top, bottom = y * out_height // height, (y + count) * out_height // height
        if bottom == top:
            continue
        band = read_rows(y, count)
        if (out_width, bottom - top) != (width, count):
            band = band.scaled(out_width, bottom - top, Qt.AspectRatioMode.IgnoreAspectRatio,
                               Qt.TransformationMode.SmoothTransformation)
        rows.append(rgba_bytes(band))
    return Image(width=out_width, height=out_height, format="rgba8", data=b"".join(rows))


def from_bgra(data: bytes, width: int, height: int) -> QImage:
    """A QImage owning a copy of straight 8-bit BGRA pixels (Krita's 8-bit layers): Qt's ARGB32 on the
    little-endian machines Krita runs on."""
    return QImage(data, width, height, width * 4, QImage.Format.Format_ARGB32).copy()
