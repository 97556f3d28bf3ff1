"""Encoding only what a stroke changed (server/imaging/changes.py, sessions.Encoder): where the change
lies, the boxes around it at canvas edges and odd sizes, the check at the patch's border, and what
the live encoder does with real coders: patch, reuse, or encode whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.imaging import changes
from server.imaging.changes import Patch
from server.imaging.latents import FullVAE, TinyCoder
from server.models.tiny_autoencoders import TinyAutoencoder
from server.sessions import LiveSessions
from shared.crop import Rect
from testing.live_encode import Encodes, shapes, stroked
from testing.tiny_models import tiny_autoencoder, tiny_pipeline

# --- pure functions ------------------------------------------------------------------------------


def picture_with(width: int, height: int, changed: list[tuple[int, int, int]]) -> np.ndarray:
    pixels = np.zeros((height, width, 3), np.uint8)
    for x, y, channel in changed:
        pixels[y, x, channel] = 7
    return pixels


CHANGED = [
    # width, height, changed pixels (x, y, channel), expected box
    (16, 16, [], None),
    (16, 16, [(5, 3, 2)], Rect(5, 3, 1, 1)),  # one channel of one pixel
    (16, 16, [(1, 2, 0), (10, 7, 1)], Rect(1, 2, 10, 6)),  # two strokes: the box spanning both
    (13, 7, [(0, 0, 0), (12, 6, 0)], Rect(0, 0, 13, 7)),  # opposite corners of an odd-sized picture
    (13, 7, [(12, 0, 1)], Rect(12, 0, 1, 1)),  # the last column
]


@pytest.mark.parametrize(("width", "height", "changed", "expected"), CHANGED)
def test_changed_box(width: int, height: int, changed: list[tuple[int, int, int]], expected: Rect | None) -> None:
    assert changes.changed_box(picture_with(width, height, []), picture_with(width, height, changed)) == expected


ALIGNED = [
    (Rect(3, 5, 1, 1), 8, Rect(0, 0, 8, 8)),
    (Rect(8, 16, 8, 8), 8, Rect(8, 16, 8, 8)),  # on the grid already
    (Rect(7, 7, 2, 2), 8, Rect(0, 0, 16, 16)),  # across a grid line
    (Rect(9, 9, 15, 1), 8, Rect(8, 8, 16, 8)),
    (Rect(5, 5, 1, 1), 1, Rect(5, 5, 1, 1)),
]


@pytest.mark.parametrize(("box", "step", "expected"), ALIGNED)
def test_aligned(box: Rect, step: int, expected: Rect) -> None:
    assert changes.aligned(box, step) == expected


PATCHES = [
    # changed, picture width, height, reach, margin, expected (changed, pasted, encoded)
    (Rect(100, 100, 10, 10), 256, 256, 16, 48,
     (Rect(96, 96, 16, 16), Rect(80, 80, 48, 48), Rect(32, 32, 144, 144))),
    (Rect(0, 0, 5, 5), 256, 256, 16, 48,  # the top-left corner: clamped
     (Rect(0, 0, 8, 8), Rect(0, 0, 24, 24), Rect(0, 0, 72, 72))),
    (Rect(60, 36, 4, 4), 64, 40, 16, 48,  # the bottom-right corner of a small picture: all of it encoded
     (Rect(56, 32, 8, 8), Rect(40, 16, 24, 24), Rect(0, 0, 64, 40))),
    (Rect(9, 9, 1, 1), 64, 64, 0, 8,  # no reach, the least margin
     (Rect(8, 8, 8, 8), Rect(8, 8, 8, 8), Rect(0, 0, 24, 24))),
    (Rect(20, 3, 1, 1), 64, 64, 4, 12,  # reach and margin off the grid: rounded out to it
     (Rect(16, 0, 8, 8), Rect(8, 0, 24, 16), Rect(0, 0, 48, 32))),
]


@pytest.mark.parametrize(("changed", "width", "height", "reach", "margin", "expected"), PATCHES)
def test_patch_for(changed: Rect, width: int, height: int, reach: int, margin: int,
                   expected: tuple[Rect, Rect, Rect]) -> None:
    assert changes.patch_for(changed, width, height, 8, reach, margin) == Patch(*expected)


@pytest.mark.parametrize(("width", "height"), [(100, 64), (64, 60), (13, 7)])
def test_no_patch_off_the_latent_grid(width: int, height: int) -> None:
    assert changes.patch_for(Rect(0, 0, 1, 1), width, height, 8) is None


@pytest.mark.parametrize(("reach", "margin"), [(-8, 48), (16, 0), (16, 7)])
def test_no_patch_without_room_for_the_ring(reach: int, margin: int) -> None:
    with pytest.raises(ValueError, match=f"not {reach} and {margin}"):
        changes.patch_for(Rect(0, 0, 1, 1), 64, 64, 8, reach, margin)


def test_share_of_the_picture() -> None:
    assert changes.patch_for(Rect(100, 100, 10, 10), 256, 256, 8).share(256, 256) == pytest.approx(144**2 / 256**2)
    assert changes.patch_for(Rect(60, 36, 4, 4), 64, 40, 8).share(64, 40) == 1.0


MIDDLE = Patch(Rect(96, 96, 16, 16), Rect(80, 80, 48, 48), Rect(32, 32, 144, 144))
CORNER = Patch(Rect(0, 0, 8, 8), Rect(0, 0, 24, 24), Rect(0, 0, 72, 72))
FILLED = Patch(Rect(0, 0, 8, 8), Rect(0, 0, 64, 40), Rect(0, 0, 64, 40))
RINGS = [
    # patch, ring width, latents in the ring
    (MIDDLE, 1, 8 * 8 - 6 * 6),
    (MIDDLE, 2, 10 * 10 - 6 * 6),
    (CORNER, 1, 4 * 4 - 3 * 3),  # clipped at the picture's edges
    (FILLED, 1, 0),  # the pasted box fills the encoded area: no ring
]


@pytest.mark.parametrize(("patch", "ring", "count"), RINGS)
def test_ring_mask(patch: Patch, ring: int, count: int) -> None:
    mask = changes.ring_mask(patch, 8, ring)
    encoded = changes.latent_rect(patch.encoded, 8)
    assert mask.shape == (encoded.height, encoded.width) and int(mask.sum()) == count


def test_ring_error_is_the_largest_difference_in_the_ring_only() -> None:
    previous = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    part = previous[..., 4:22, 4:22].clone()  # MIDDLE's encoded area in latents
    assert changes.ring_error(previous, part, MIDDLE, 8) == 0.0
    part[..., 6:12, 6:12] += 5.0  # inside the pasted box: not part of the check
    assert changes.ring_error(previous, part, MIDDLE, 8) == 0.0
    part[0, 2, 5, 9] += 0.25  # in the ring
    part[0, 1, 3, 3] += 9.0  # beyond it, near the crop's edge
    assert changes.ring_error(previous, part, MIDDLE, 8) == pytest.approx(0.25)
    assert changes.ring_error(previous, previous, FILLED, 8) == 0.0


def test_pasted_takes_the_pasted_box_only() -> None:
    previous = torch.zeros(1, 4, 32, 32)
    part = torch.arange(18 * 18, dtype=torch.float32).reshape(1, 1, 18, 18).expand(1, 4, 18, 18)
    out = changes.pasted(previous, part, MIDDLE, 8)
    assert torch.equal(out[..., 10:16, 10:16], part[..., 6:12, 6:12])
    out[..., 10:16, 10:16] = 0
    assert not out.any() and not previous.any()  # a copy: the previous latents stay


# --- the live encoder with real coders -----------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline("sd15")


@pytest.fixture(scope="module")
def tiny(pipe) -> TinyCoder:
    return TinyCoder(pipe, TinyAutoencoder("toy", tiny_autoencoder().eval()))


@pytest.fixture
def tiny_encodes(tiny):
    encodes = Encodes(tiny.tiny.module.encoder)
    yield encodes
    encodes.close()


SIDE = 256
CANVAS = shapes(SIDE, SIDE)
STROKE = (120, 118)  # a 24 x 12 line 5 px wide: encoded in 168 x 152 px, 43% of the canvas


def frame(sessions: LiveSessions, coder, picture, session: str = "s", **knobs):
    encoder = sessions.encoder((1, session), f"model\0{coder.label}", coder)
    for name, value in knobs.items():
        setattr(encoder, name, value)
    return encoder(picture), encoder


def test_a_stroke_encodes_only_the_area_around_it(tiny, tiny_encodes):
    sessions = LiveSessions()
    first, encoder = frame(sessions, tiny, CANVAS)
    assert encoder.way == "whole" and tiny_encodes.take() == [(SIDE, SIDE)]
    after = stroked(CANVAS, *STROKE)
    latents, encoder = frame(sessions, tiny, after)
    patch = changes.patch_for(changes.changed_box(np.asarray(CANVAS), np.asarray(after)), SIDE, SIDE, 8)
    assert encoder.way == "tiles" and encoder.reused is False
    assert tiny_encodes.take() == [(patch.encoded.height, patch.encoded.width)] == [(152, 168)]
    # Within the bound of a whole encode; the ring's measure is what the patch is off by, at most.
    whole = tiny.encode(after)
    tiny_encodes.take()
    error = float((latents - whole).abs().max())
    assert 0 < encoder.ring_error <= changes.BOUND
    assert error <= encoder.ring_error
    # Only the pasted box changed from the last latents.
    box = changes.latent_rect(patch.pasted, 8)
    outside = torch.ones(latents.shape[-2:], dtype=torch.bool)
    outside[box.y:box.bottom, box.x:box.right] = False
    assert torch.equal(latents[..., outside], first[..., outside])
    assert not torch.equal(latents, first)
    # The same picture again is reused as it is.
    again, encoder = frame(sessions, tiny, after)
    assert encoder.way == "reused" and encoder.reused is True and again is latents and tiny_encodes.take() == []


def test_a_failed_border_check_encodes_whole(tiny, tiny_encodes):
    sessions = LiveSessions()
    frame(sessions, tiny, CANVAS)
    tiny_encodes.take()
    after = stroked(CANVAS, *STROKE)
    # The least margin: the ring lies at the crop's zero-padded edge and is far off.
    latents, encoder = frame(sessions, tiny, after, margin=8)
    assert encoder.way == "whole" and encoder.ring_error > changes.BOUND
    assert tiny_encodes.take() == [(72, 88), (SIDE, SIDE)]  # the refused patch, then the whole
    assert torch.equal(latents, tiny.encode(after))


def test_patches_stop_where_their_errors_add_up_past_the_bound(tiny):
    sessions = LiveSessions()
    frame(sessions, tiny, CANVAS)
    pictures = [stroked(CANVAS, *STROKE)]
    pictures.append(stroked(pictures[-1], 40, 180))
    errors = []
    for picture in pictures:
        _, encoder = frame(sessions, tiny, picture)
        assert encoder.way == "tiles"
        errors.append(encoder.ring_error)
    assert sessions.start((1, "s")).drift == pytest.approx(sum(errors))
    # A bound the drift so far fills: the next patch is refused, the whole encoded and the drift reset.
    _, encoder = frame(sessions, tiny, stroked(pictures[-1], 180, 40), bound=sum(errors))
    assert encoder.way == "whole" and encoder.ring_error > 0
    assert sessions.start((1, "s")).drift == 0


@pytest.mark.parametrize(("second", "why"), [
    (shapes(SIDE, SIDE - 8), "a size change"),
    (stroked(CANVAS, 10, 10, SIDE - 20, SIDE - 20), "a change over more than half the picture"),
])
def test_encoded_whole(tiny, tiny_encodes, second, why):
    sessions = LiveSessions()
    frame(sessions, tiny, CANVAS)
    tiny_encodes.take()
    latents, encoder = frame(sessions, tiny, second)
    assert encoder.way == "whole" and encoder.ring_error is None, why
    assert tiny_encodes.take() == [(second.height, second.width)]
    assert torch.equal(latents, tiny.encode(second))


def test_another_coder_encodes_whole(pipe, tiny, tiny_encodes):
    sessions = LiveSessions()
    frame(sessions, tiny, CANVAS)
    vae = FullVAE(pipe)
    after = stroked(CANVAS, *STROKE)
    full_encodes = Encodes(pipe.vae.encoder)
    try:
        _, encoder = frame(sessions, vae, after)  # the full VAE's latents: not the tiny one's to patch
        assert encoder.way == "whole" and full_encodes.take() == [(SIDE, SIDE)]
        # And the full VAE is never patched: not local.
        _, encoder = frame(sessions, vae, stroked(after, 40, 180))
        assert encoder.way == "whole" and encoder.ring_error is None and full_encodes.take() == [(SIDE, SIDE)]
    finally:
        full_encodes.close()


def test_the_full_vae_is_not_local(pipe, tiny):
    """Why the full VAE is never patched: its group norms and attention see the whole picture, so a
    patch at the margin that suits the tiny encoder is far outside the bound."""
    after = stroked(CANVAS, *STROKE)
    patch = changes.patch_for(changes.changed_box(np.asarray(CANVAS), np.asarray(after)), SIDE, SIDE, 8)
    area = patch.encoded
    crop = (area.x, area.y, area.right, area.bottom)
    errors = {coder.name: changes.ring_error(coder.encode(CANVAS), coder.encode(after.crop(crop)), patch, 8)
              for coder in (FullVAE(pipe), tiny)}
    assert errors["vae"] > changes.BOUND and errors["vae"] > 100 * errors["tiny"]
    assert not FullVAE.local and TinyCoder.local


def test_the_start_picture_counts_in_the_budget(tiny):
    sessions = LiveSessions()
    frame(sessions, tiny, CANVAS)
    start = sessions.start((1, "s"))
    assert start.footprint() == SIDE * SIDE * 3 + start.latents.nbytes
    small = LiveSessions(budget=start.footprint() + 1)
    frame(small, tiny, CANVAS, session="a")
    frame(small, tiny, CANVAS, session="b")  # two starts exceed the budget: the older goes
    assert small.start((1, "a")) is None and small.start((1, "b")) is not None
