"""Protocol image payloads <-> PIL images, with the checks that need pixels decoded."""

from __future__ import annotations

import io

import PIL.Image

from shared import messages

from ..errors import BadInput

# A PNG may declare a small size in our message but hold a huge one; PIL's own guard is the
# last line, our size check against the declared width/height is the first.
PIL.Image.MAX_IMAGE_PIXELS = 64 * 1024 * 1024
# Flattening transparent canvas onto white matches Krita's default background.
BACKGROUND = (255, 255, 255, 255)


def to_pil(payload: messages.Image, where: str) -> PIL.Image.Image:
    """An `Image` as RGBA or a `Mask` as L, at its declared size."""
    mode = "L" if isinstance(payload, messages.Mask) else "RGBA"
    if payload.format in ("rgba8", "a8"):
        return PIL.Image.frombytes(mode, (payload.width, payload.height), payload.data)
    unreadable = BadInput(f"{where}.data is not a readable PNG", f"{where}.data")
    try:
        image = PIL.Image.open(io.BytesIO(payload.data))
    except Exception:
        raise unreadable from None
    # Before the pixels are decompressed: the declared size is what the message's checks allowed.
    if image.size != (payload.width, payload.height):
        raise BadInput(f"{where} says {payload.width}x{payload.height} but its PNG is {image.width}x{image.height}",
                       f"{where}.data")
    try:
        image.load()
    except Exception:
        raise unreadable from None
    return image.convert(mode)


def from_pil(image: PIL.Image.Image, fmt: str = "rgba8", x: int = 0, y: int = 0) -> messages.Image:
    image = image.convert("RGBA")
    if fmt == "png":
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        data = buffer.getvalue()
    else:
        data = image.tobytes()
    return messages.Image(width=image.width, height=image.height, format=fmt, data=data, x=x, y=y)


def flattened(picture: PIL.Image.Image) -> PIL.Image.Image:
    """`picture` over the canvas's white background, as RGB: how its transparency shows in Krita over an
    empty canvas."""
    canvas = PIL.Image.new("RGBA", picture.size, BACKGROUND)
    canvas.alpha_composite(picture.convert("RGBA"))
    return canvas.convert("RGB")
