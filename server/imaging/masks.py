"""Pure image math for inpainting, on numpy arrays: selection edges, resampling, infill, the
per-step latent blend rule, colour matching and compositing.

Images are row-major `(height, width, channels)` uint8 arrays unless a function says otherwise;
masks are `(height, width)` uint8 coverage, 0 outside and 255 inside.
"""

from __future__ import annotations

import cv2
import numpy as np

# Infill runs on a picture at most this wide: OpenCV's inpainting costs grow with the hole's area
# times its border, so a 1024² hole takes seconds at full size, and diffusion repaints the fill
# anyway; only its colours and large shapes matter.
INFILL_SIDE = 256
INFILL_RADIUS = 3
# Where nothing at all is known (an empty canvas), the start is mid grey.
NEUTRAL = 128


def bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the non-zero pixels, None when there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def edge_alpha(coverage: np.ndarray, grow: int, feather: int) -> np.ndarray:
    """The result's alpha: the selection grown by `grow` pixels, then faded linearly to 0 over `feather`.

    Never below the coverage itself, so a soft selection keeps its own fade. The growth starts
    from the most-selected pixels (255 for an ordinary selection); with exact Euclidean
    distances the ramp changes by at most 255/feather between 4-neighbours and is exactly 0
    from grow + feather pixels on.
    """
    peak = int(coverage.max(initial=0))
    if peak == 0:
        return np.zeros_like(coverage)
    outside_core = (coverage != peak).astype(np.uint8)
    distance = cv2.distanceTransform(outside_core, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if feather > 0:
        ramp = np.clip((grow + feather - distance) / feather, 0.0, 1.0)
    else:
        ramp = (distance <= grow).astype(np.float32)
    return np.maximum(coverage, np.rint(peak * ramp).astype(np.uint8))


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` at (width, height): area averaging to shrink (no aliasing), Lanczos to enlarge (sharp)."""
    height, width = image.shape[:2]
    if (width, height) == size:
        return image.copy()
    shrinking = size[0] <= width and size[1] <= height
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)
    return resized


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask at (width, height) as float32 in 0..1; bilinear when enlarging, so no ringing."""
    height, width = mask.shape[:2]
    shrinking = size[0] <= width and size[1] <= height
    resized = cv2.resize(mask.astype(np.float32) / 255.0, size,
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0)


def resize_rgba(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Straight RGBA resampled with premultiplied alpha, so transparent pixels' colours never bleed in."""
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    premultiplied = np.concatenate([rgba[..., :3].astype(np.float32) * alpha, alpha * 255.0], axis=2)
    resized = np.clip(resize(premultiplied, size), 0.0, 255.0)
    new_alpha = resized[..., 3:] / 255.0
    colour = np.where(new_alpha > 0, resized[..., :3] / np.maximum(new_alpha, 1e-6), 0.0)
    return np.rint(np.concatenate([np.clip(colour, 0, 255), resized[..., 3:]], axis=2)).astype(np.uint8)


def infill(rgb: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """`rgb` with the `unknown` pixels painted in from the known ones (OpenCV's Navier-Stokes inpainting).

    Navier-Stokes rather than Telea: OpenCV's Telea brightens flat areas by a few levels, which
    the model would then continue. Runs at most INFILL_SIDE wide and is enlarged back; known
    pixels are returned unchanged.
    """
    if not unknown.any():
        return rgb.copy()
    if unknown.all():
        return np.full_like(rgb, NEUTRAL)
    height, width = unknown.shape
    scale = min(1.0, INFILL_SIDE / max(height, width))
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # A small pixel counts as known only if every pixel under it is known: unknown colours are garbage.
    small_unknown = resize_mask(unknown.astype(np.uint8) * 255, small_size) > 0
    if small_unknown.all():
        mean = rgb[~unknown].mean(axis=0)
        return np.where(unknown[..., None], np.rint(mean).astype(np.uint8), rgb)
    small = resize(rgb, small_size)
    filled = cv2.inpaint(small, small_unknown.astype(np.uint8), INFILL_RADIUS, cv2.INPAINT_NS)
    enlarged = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(unknown[..., None], enlarged, rgb)


def start_picture(rgba: np.ndarray, replace: np.ndarray) -> np.ndarray:
    """The opaque RGB picture diffusion starts from.

    Transparent canvas is infilled from the painting (outpainting continues the picture rather
    than a flat background); `replace` pixels are infilled even where painted, so the model starts
    from the surroundings' colours instead of the object being replaced. Partly transparent
    pixels are their own colour over the infill.
    """
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    unknown = (alpha[..., 0] < 0.5) | replace
    filled = infill(rgba[..., :3], unknown).astype(np.float32)
    over = rgba[..., :3].astype(np.float32) * alpha + filled * (1.0 - alpha)
    return np.rint(np.where(replace[..., None], filled, over)).astype(np.uint8)


def step_threshold(position: int, length: int) -> float:
    """Coverage above which a latent pixel keeps the model's latents after step `position` of `length`.

    The soft mask is a per-pixel denoising strength: a pixel of coverage m is in the model's hands
    for the last round(m * length) steps of the schedule and is the re-noised original before
    that, so full coverage is denoised throughout, half coverage only over the second half, and
    zero coverage never.
    """
    return (length - position - 0.5) / length


def ring(alpha: np.ndarray, margin: float, width: float) -> np.ndarray:
    """Pixels outside the result (alpha 0) between `margin` and `margin + width` pixels from it."""
    distance = cv2.distanceTransform((alpha == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (distance > margin) & (distance <= margin + width)


def colour_offset(generated: np.ndarray, original: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Mean per-channel (original - generated) over `where`: how far the model's colours drifted
    on pixels it was told to keep. Zero when `where` is empty."""
    if not where.any():
        return np.zeros(3, np.float32)
    difference = original[where][:, :3].astype(np.float32) - generated[where][:, :3].astype(np.float32)
    return difference.mean(axis=0)


def composite(below: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA `above` over `below` (Porter-Duff over), both uint8, rounded to uint8.

    Where `above` is transparent the result is `below`, bit for bit.
    """
    a_top = above[..., 3:].astype(np.float32) / 255.0
    a_low = below[..., 3:].astype(np.float32) / 255.0
    a_out = a_top + a_low * (1.0 - a_top)
    colour = above[..., :3] * a_top + below[..., :3] * a_low * (1.0 - a_top)
    colour = np.where(a_out > 0, colour / np.maximum(a_out, 1e-6), 0.0)
    out = np.rint(np.concatenate([colour, a_out * 255.0], axis=2)).astype(np.uint8)
    transparent = above[..., 3] == 0
    out[transparent] = below[transparent]
    return out
