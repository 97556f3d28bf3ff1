"""How visible the seams between tiles are in a picture: the picture's change from one pixel to
the next across the tiles' edges, against its change inside the tiles (tests and bench/upscale.py)."""

from __future__ import annotations

import numpy as np

from shared.tiles import spans

# Pixels either side of a tile's edge that count as "at the edge" (the VAE's decoder spreads a latent
# pixel over about this many), and pixels farther than which from every edge count as "inside".
AT_EDGE = 2
INSIDE = 8


def seam_ratio(picture: np.ndarray, tile: int, overlap: int, scale: int) -> float:
    """Mean absolute difference between neighbouring pixels across the tiles' edges, divided by the
    same inside the tiles; both directions. 1 is seamless; a visible seam is well above 1.

    `picture` is RGB (height, width, 3); the tiles are those shared/tiles.py cuts from its latents
    (`tile` and `overlap` in latent pixels, `scale` pixels per latent pixel)."""
    pixels = picture.astype(np.float32)
    at, inside = [], []
    for axis in (0, 1):
        steps = np.abs(np.diff(pixels, axis=axis)).mean(axis=tuple(a for a in (0, 1, 2) if a != axis))
        length = pixels.shape[axis]
        edges = sorted({edge * scale for start, end in spans(length // scale, tile, overlap)
                        for edge in (start, end) if 0 < edge * scale < length})
        if not edges:
            continue
        distance = np.min(np.abs(np.arange(len(steps))[:, None] + 0.5 - np.array(edges)[None, :]), axis=1)
        at.append(steps[distance <= AT_EDGE])
        inside.append(steps[distance > INSIDE])
    return float(np.concatenate(at).mean() / max(np.concatenate(inside).mean(), 1e-6))
