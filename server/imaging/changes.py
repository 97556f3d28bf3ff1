"""Where a live session's start picture changed since its last frame, and its latents patched there.

A stroke changes a small part of the canvas. Instead of encoding the whole picture again, only an area
around the change is encoded and part of it pasted into a copy of the previous latents:

    changed   the box of changed pixels, on the latent grid;
    pasted    the changed box grown by REACH: latents this near a change change with it (the encoder's
              convolutions see past the box);
    encoded   the pasted box grown by MARGIN, clamped to the picture: context, so that the pasted latents
              miss none of what a whole encode sees (a crop's edge is zero-padded, not the picture);
    ring      the latents just outside the pasted box, encoded fresh from unchanged pixels: they should
              equal the previous latents there. What they differ by is the larger of what the crop's
              edge still leaves in the pasted latents and what the change still moves in the latents
              kept, both falling with distance; where it is over BOUND the patch is refused.

docs/live.md has the measurements behind the numbers: an encoder without normalisation or attention
(TAESD's kind) meets the bound with room to spare; a full VAE's group norms (and its attention, where
it has one) make every latent depend on the whole picture, so it never does, and is never patched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.crop import Rect

REACH = 16  # pixels
MARGIN = 48  # pixels
RING = 1  # latent pixels
# In the UNet's latent space, whose values a trained model's scaling factor brings to a deviation of
# about 1: a ring this far off moves a trained decoder's pixels by at most about 3 levels of 255.
BOUND = 0.02
# A patch encoding more than this share of the picture is not tried: it would cost most of a whole
# encode, and a refused one costs a whole encode on top.
MAX_SHARE = 0.5


@dataclass(frozen=True)
class Patch:
    """Pixel rectangles on the latent grid (see the module's docstring)."""

    changed: Rect
    pasted: Rect
    encoded: Rect

    def share(self, width: int, height: int) -> float:
        """The encoded area's share of a width x height picture."""
        return self.encoded.width * self.encoded.height / (width * height)


def changed_box(before: np.ndarray, after: np.ndarray) -> Rect | None:
    """The bounding box of the pixels that differ between two pictures of one shape (height, width,
    channels), or None where none do."""
    differs = (before != after).any(axis=-1)
    rows, columns = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if rows.size == 0:
        return None
    return Rect(int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1))


def aligned(box: Rect, step: int) -> Rect:
    """`box` grown outward to multiples of `step`."""
    x, y = box.x // step * step, box.y // step * step
    right, bottom = -(-box.right // step) * step, -(-box.bottom // step) * step
    return Rect(x, y, right - x, bottom - y)


def patch_for(changed: Rect, width: int, height: int, scale: int, reach: int = REACH,
              margin: int = MARGIN) -> Patch | None:
    """The patch for `changed` pixels of a width x height picture whose latents are `scale` times smaller,
    each box clamped to the picture; None where the picture is off the latent grid (a side not a
    multiple of `scale`). The margin holds the ring: a latent pixel at least."""
    if reach < 0 or margin < scale:
        raise ValueError(f"a patch needs a reach of 0 or more and a margin of {scale} px or more, "
                         f"not {reach} and {margin}")
    if width % scale or height % scale:
        return None
    picture = Rect(0, 0, width, height)
    box = aligned(changed, scale).intersect(picture)
    pasted = aligned(box.grown(reach), scale).intersect(picture)
    return Patch(box, pasted, aligned(pasted.grown(margin), scale).intersect(picture))


def latent_rect(rect: Rect, scale: int) -> Rect:
    """A pixel rectangle on the latent grid, in latent pixels."""
    return Rect(rect.x // scale, rect.y // scale, rect.width // scale, rect.height // scale)


def ring_mask(patch: Patch, scale: int, ring: int = RING) -> torch.Tensor:
    """Over the encoded area's latents: True at those within `ring` of the pasted box and outside it."""
    encoded = latent_rect(patch.encoded, scale)
    pasted = latent_rect(patch.pasted, scale).relative_to(encoded)
    near = pasted.grown(ring).intersect(Rect(0, 0, encoded.width, encoded.height))
    mask = torch.zeros(encoded.height, encoded.width, dtype=torch.bool)
    mask[near.y:near.bottom, near.x:near.right] = True
    mask[pasted.y:pasted.bottom, pasted.x:pasted.right] = False
    return mask


def ring_error(previous: torch.Tensor, part: torch.Tensor, patch: Patch, scale: int, ring: int = RING) -> float:
    """The largest difference in the ring between the encoded area's fresh latents `part` and the
    `previous` latents of the whole picture; 0 where there is no ring (the pasted box reaches the
    picture's edges all round)."""
    encoded = latent_rect(patch.encoded, scale)
    before = previous[..., encoded.y:encoded.bottom, encoded.x:encoded.right]
    mask = ring_mask(patch, scale, ring)
    if not mask.any():
        return 0.0
    return float((part.float() - before.float()).abs()[..., mask].max())


def pasted(previous: torch.Tensor, part: torch.Tensor, patch: Patch, scale: int) -> torch.Tensor:
    """A copy of `previous` with the pasted box's latents taken from `part`, the encoded area's."""
    encoded, box = latent_rect(patch.encoded, scale), latent_rect(patch.pasted, scale)
    inner = box.relative_to(encoded)
    out = previous.clone()
    out[..., box.y:box.bottom, box.x:box.right] = part[..., inner.y:inner.bottom, inner.x:inner.right]
    return out
