"""Inpaint end to end: a canvas, the shared crop rule, the real server on loopback, the patch composited back.

The client side reads only the context region from a canvas buffer, as the plugin does; every
case checks that compositing the returned patch leaves every pixel outside the grown selection
bit-identical and that the patch covers the grown selection's bounds and nothing more.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

import cv2
import numpy as np
import PIL.Image
import pytest

from server.imaging import masks
from shared.client import Client
from shared.crop import Edge, Rect, context_rect, edge_defaults
from shared.messages import Error, Generate, Image, Mask, Progress, Queued, Result

MODELS = ["tiny-sd15", "tiny-sd15-inpaint", "tiny-sdxl", "tiny-sdxl-inpaint"]


def painting(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An opaque canvas with gradients and noise, so a changed pixel shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    rgb = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 256], axis=2)
    rgb = np.clip(rgb + rng.integers(-20, 21, rgb.shape), 0, 255)
    return np.dstack([rgb, np.full((height, width), 255)]).astype(np.uint8)


def box_mask(width: int, height: int, box: Rect) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[max(0, box.y):box.bottom, max(0, box.x):box.right] = 255
    return mask


@dataclass
class Outcome:
    result: Result
    context: Rect
    edge: Edge
    patch: Rect  # where the returned image lies, canvas coordinates
    alpha: np.ndarray  # the patch's alpha
    after: np.ndarray  # the canvas with the patch composited over it


def inpaint(client: Client, canvas: np.ndarray, mask: np.ndarray, model: str = "tiny-sd15",
            **fields) -> Outcome:
    """What the plugin does: crop rule, read the region, send, composite the patch back."""
    height, width = mask.shape
    canvas_rect = Rect(0, 0, width, height)
    found = masks.bounds(mask)
    selection = Rect(*found) if found else Rect(0, 0, width, height)
    edge = edge_defaults(selection)
    if "grow" in fields or "feather" in fields:
        edge = Edge(fields.get("grow", edge.grow), fields.get("feather", edge.feather))
    context = context_rect(selection, canvas_rect, edge, fields.get("fill", "auto"))
    rows, cols = slice(context.y, context.bottom), slice(context.x, context.right)
    request = Generate(
        id=uuid.uuid4().hex, mode="inpaint", model=model, prompt=fields.pop("prompt", "a red boat"),
        steps=fields.pop("steps", 2), seed=fields.pop("seed", 3),
        image=Image(width=context.width, height=context.height, format="rgba8", x=context.x, y=context.y,
                    data=np.ascontiguousarray(canvas[rows, cols]).tobytes()),
        mask=Mask(width=context.width, height=context.height, format="a8", x=context.x, y=context.y,
                  data=np.ascontiguousarray(mask[rows, cols]).tobytes()),
        **{"grow": edge.grow, "feather": edge.feather, **fields},
    )
    result = client.generate(request)
    image = result.images[0].image
    patch = Rect(image.x, image.y, image.width, image.height)
    rgba = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4)
    after = canvas.copy()
    region = (slice(patch.y, patch.bottom), slice(patch.x, patch.right))
    after[region] = masks.composite(canvas[region], rgba)
    return Outcome(result, context, edge, patch, rgba[..., 3], after)


def distance_to(mask: np.ndarray, level: int = 255) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest pixel of `mask` at `level`."""
    return cv2.distanceTransform((mask != level).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def check_bounded(outcome: Outcome, canvas: np.ndarray, mask: np.ndarray) -> None:
    """The properties every inpaint must have."""
    height, width = mask.shape
    patch, edge = outcome.patch, outcome.edge
    assert len(outcome.result.images) == 1
    assert Rect(0, 0, width, height).contains(patch) and outcome.context.contains(patch)
    # The patch is exactly the grown selection's bounds: no row or column of it is fully transparent.
    assert masks.bounds(outcome.alpha) == (0, 0, patch.width, patch.height)
    alpha = np.zeros(mask.shape, np.uint8)
    alpha[patch.y:patch.bottom, patch.x:patch.right] = outcome.alpha
    assert (alpha[mask == 255] == 255).all(), "the selection itself is fully replaced"
    assert (alpha >= mask).all(), "a soft selection keeps at least its own coverage"
    distance = distance_to(mask, mask.max())
    assert (alpha[(distance >= edge.reach) & (mask == 0)] == 0).all(), "nothing beyond grow + feather"
    # Outside the grown selection, every pixel is bit-identical.
    untouched = alpha == 0
    assert (outcome.after[untouched] == canvas[untouched]).all()
    assert not (outcome.after[mask == 255] == canvas[mask == 255]).all(), "the selection was repainted"


# --- geometry: offsets, odd sizes, borders, tiny and full selections, soft masks -------------------

GEOMETRY = [
    # name, canvas (width, height), selection box
    ("far from the origin", (1400, 2300), Rect(1000, 2000, 120, 90)),
    ("odd size 37x301", (700, 900), Rect(333, 301, 37, 301)),
    ("touching the left border", (600, 500), Rect(0, 200, 80, 60)),
    ("touching the top border", (600, 500), Rect(250, 0, 80, 60)),
    ("touching the right border", (600, 500), Rect(520, 200, 80, 60)),
    ("touching the bottom border", (600, 500), Rect(250, 440, 80, 60)),
    ("one pixel", (800, 800), Rect(400, 411, 1, 1)),
    ("the whole canvas", (300, 200), Rect(0, 0, 300, 200)),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("name", "size", "box"), GEOMETRY, ids=[g[0] for g in GEOMETRY])
def test_patch_is_bounded_and_outside_is_bit_identical(client, model, name, size, box):
    canvas = painting(*size)
    mask = box_mask(*size, box)
    outcome = inpaint(client, canvas, mask, model=model)
    check_bounded(outcome, canvas, mask)
    reach = outcome.edge.reach
    expected = box.grown(reach - 1).intersect(Rect(0, 0, *size))
    assert outcome.patch == expected
    info = outcome.result.info
    assert info["patch"] == [expected.x, expected.y, expected.width, expected.height]
    assert info["selection"] == [box.x, box.y, box.width, box.height]


def soft_ellipse(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    r = np.hypot((xx - width * 0.55) / (width * 0.2), (yy - height * 0.4) / (height * 0.15))
    return np.clip((1.3 - r) / 0.6 * 255, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl-inpaint"])
def test_soft_selection(client, model):
    canvas, mask = painting(520, 430, seed=4), soft_ellipse(520, 430)
    assert 0 < (mask[(mask > 0) & (mask < 255)]).size
    outcome = inpaint(client, canvas, mask, model=model)
    check_bounded(outcome, canvas, mask)


def test_irregular_selection_with_explicit_edge(client):
    canvas = painting(640, 480, seed=5)
    mask = np.zeros((480, 640), np.uint8)
    cv2.circle(mask, (300, 200), 60, 255, -1)
    cv2.rectangle(mask, (100, 300), (420, 330), 255, -1)
    outcome = inpaint(client, canvas, mask, grow=0, feather=12)
    check_bounded(outcome, canvas, mask)
    assert outcome.result.info["grow"] == 0 and outcome.result.info["feather"] == 12


# --- resolution -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "box"), [((900, 900), Rect(450, 450, 10, 10)),
                                           ((1600, 1500), Rect(100, 100, 1400, 1300))])
def test_generation_runs_at_the_native_area(client, size, box):
    outcome = inpaint(client, painting(*size), box_mask(*size, box))
    info = outcome.result.info
    area = info["generation_width"] * info["generation_height"]
    assert abs(area - 256 * 256) / (256 * 256) < 0.1  # tiny models are native at 256 px
    assert info["generation_width"] % 8 == 0 and info["generation_height"] % 8 == 0
    assert [info["width"], info["height"]] == info["context"][2:]


# --- fill modes -------------------------------------------------------------------------------------

FILLS = ["fill", "expand", "add", "remove", "replace_background"]


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sd15-inpaint"])
@pytest.mark.parametrize("fill", FILLS)
def test_every_fill_mode(client, model, fill):
    size = (500, 400)
    canvas, mask = painting(*size, seed=1), box_mask(*size, Rect(180, 150, 120, 90))
    outcome = inpaint(client, canvas, mask, model=model, fill=fill)
    assert outcome.result.info["fill"] == fill
    if fill == "replace_background":
        inverse = 255 - mask
        check_bounded(outcome, canvas, inverse)
        assert outcome.context == Rect(0, 0, *size)
        # The selected subject's inside, beyond the reach, is kept bit for bit.
        core = distance_to(inverse, 255) >= outcome.edge.reach
        assert core.any() and (outcome.after[core] == canvas[core]).all()
    else:
        check_bounded(outcome, canvas, mask)


def test_remove_without_a_prompt_asks_for_background(client):
    size = (400, 400)
    outcome = inpaint(client, painting(*size), box_mask(*size, Rect(150, 150, 60, 60)), fill="remove", prompt="")
    assert outcome.result.info["prompt"] == "background"
    outcome = inpaint(client, painting(*size), box_mask(*size, Rect(150, 150, 60, 60)), fill="remove",
                      prompt="grass")
    assert outcome.result.info["prompt"] == "grass"


def outpaint_canvas() -> tuple[np.ndarray, np.ndarray]:
    """A canvas grown to the right: its right part is transparent, and the selection covers it and some painting."""
    canvas = painting(600, 400, seed=2)
    canvas[:, 400:] = 0
    return canvas, box_mask(600, 400, Rect(360, 0, 240, 400))


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl-inpaint"])
def test_auto_expands_onto_transparent_canvas(client, model):
    canvas, mask = outpaint_canvas()
    outcome = inpaint(client, canvas, mask, model=model)
    assert outcome.result.info["fill"] == "expand"
    check_bounded(outcome, canvas, mask)
    assert (outcome.after[mask == 255][:, 3] == 255).all(), "the empty canvas is painted, opaque"
    assert (outcome.after[:, :300] == canvas[:, :300]).all()


def test_auto_fills_on_opaque_canvas(client):
    outcome = inpaint(client, painting(300, 300), box_mask(300, 300, Rect(100, 100, 50, 50)))
    assert outcome.result.info["fill"] == "fill"


def test_refine_with_strength_below_one(client):
    size = (400, 300)
    canvas, mask = painting(*size, seed=6), box_mask(*size, Rect(120, 100, 100, 80))
    refined = inpaint(client, canvas, mask, strength=0.5, seed=9)
    check_bounded(refined, canvas, mask)
    assert refined.result.info["strength"] == 0.5
    full = inpaint(client, canvas, mask, seed=9)
    assert not (refined.after == full.after).all()


def test_same_seed_same_patch_and_batches(client, server):
    size = (400, 300)
    canvas, mask = painting(*size, seed=7), box_mask(*size, Rect(100, 100, 70, 70))
    first = inpaint(client, canvas, mask, seed=11, batch_size=2)
    again = inpaint(client, canvas, mask, seed=11, batch_size=2)
    images = [i.image for i in first.result.images]
    assert [i.image.data for i in again.result.images] == [i.data for i in images]
    assert images[0].data != images[1].data
    assert {(i.x, i.y, i.width, i.height) for i in images} == {(first.patch.x, first.patch.y, first.patch.width,
                                                                first.patch.height)}


def test_progress_still_reported_each_step(client):
    seen = []
    mask = box_mask(300, 300, Rect(100, 100, 50, 50))
    canvas = painting(300, 300)
    request = Generate(id="progress", mode="inpaint", model="tiny-sd15", prompt="x", steps=3, seed=1, preview=True,
                       image=Image(width=300, height=300, format="rgba8", data=canvas.tobytes()),
                       mask=Mask(width=300, height=300, format="a8", data=mask.tobytes()))
    client.generate(request, on_message=seen.append)
    assert [m.step for m in seen if isinstance(m, Progress)] == [1, 2, 3]


def test_png_result_and_mask_sub_rectangle(client):
    canvas = painting(400, 400, seed=8)
    sub = np.full((30, 40), 255, np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(sub, "L").save(buffer, format="PNG")
    request = Generate(
        id="png", mode="inpaint", model="tiny-sd15", prompt="x", steps=2, seed=1, result_format="png",
        image=Image(width=400, height=400, format="rgba8", data=canvas.tobytes(), x=50, y=60),
        mask=Mask(width=40, height=30, format="png", data=buffer.getvalue(), x=250, y=260),
    )
    result = client.generate(request)
    image = result.images[0].image
    reach = result.info["grow"] + result.info["feather"]
    assert (image.x, image.y) == (250 - reach + 1, 260 - reach + 1)
    assert PIL.Image.open(io.BytesIO(image.data)).size == (image.width, image.height) == (40 + 2 * reach - 2,
                                                                                         30 + 2 * reach - 2)


# --- errors ---------------------------------------------------------------------------------------------


def first_reply(client: Client, request: Generate):
    client.send(request)
    for reply in client.messages(timeout=60):
        if not isinstance(reply, Progress):
            return reply


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def bad(**fields) -> Generate:
    canvas = painting(64, 64)
    defaults = dict(id=uuid.uuid4().hex, mode="inpaint", model="tiny-sd15", steps=2,
                    image=Image(width=64, height=64, format="rgba8", data=canvas.tobytes(), x=100, y=100),
                    mask=Mask(width=8, height=8, format="a8", data=b"\xff" * 64, x=110, y=110))
    return Generate(**{**defaults, **fields})


ERRORS = [
    ("empty a8 mask", bad(mask=Mask(width=8, height=8, format="a8", data=bytes(64), x=110, y=110)),
     "empty_selection", "mask", True),
    ("mask left of the image", bad(mask=Mask(width=8, height=8, format="a8", data=b"\xff" * 64, x=99, y=110)),
     "bad_request", "mask", True),
    ("mask past the image's bottom", bad(mask=Mask(width=8, height=8, format="a8", data=b"\xff" * 64, x=110,
                                                   y=157)), "bad_request", "mask", True),
    ("a8 mask of the wrong length", bad(mask=Mask(width=8, height=8, format="a8", data=b"\xff" * 60, x=110,
                                                  y=110)), "bad_request", "mask.data", True),
    ("strength that runs no step", bad(strength=0.2), "bad_request", "strength", True),
    ("no mask", bad(mask=None), "bad_request", "mask", True),
    ("PNG mask of another size", bad(mask=Mask(width=8, height=8, format="png", data=png(np.full((9, 8), 255,
                                                                                                 np.uint8)),
                                               x=110, y=110)), "bad_request", "mask.data", False),
    ("empty PNG mask", bad(mask=Mask(width=8, height=8, format="png", data=png(np.zeros((8, 8), np.uint8)),
                                     x=110, y=110)), "empty_selection", "mask", False),
    ("nothing left to replace", bad(fill="replace_background",
                                    mask=Mask(width=64, height=64, format="a8", data=b"\xff" * 4096, x=100, y=100)),
     "empty_selection", "mask", False),
]


@pytest.mark.parametrize(("name", "request_", "code", "field", "before_queueing"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_errors(client, name, request_, code, field, before_queueing):
    reply = first_reply(client, request_)
    if not before_queueing:
        assert isinstance(reply, Queued)
        reply = first_reply_after_queued(client)
    assert isinstance(reply, Error), reply
    assert (reply.code, reply.field) == (code, field)
    assert reply.message


def first_reply_after_queued(client: Client):
    for reply in client.messages(timeout=60):
        if not isinstance(reply, (Progress, Queued)):
            return reply
