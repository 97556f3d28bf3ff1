"""Test helpers for the Krita plugin: its package on sys.path, a fake document, a scripted
connection and controller, a server for the plugin to talk to.

The plugin is imported as Krita imports it, as the top-level package `underpaint_krita`.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared.crop import Rect
from shared.images import crop
from shared.messages import Image, Limits, ModelInfo, Welcome
from testing.processes import ServerProcess

REPO = Path(__file__).resolve().parent.parent
PLUGIN_SOURCE = REPO / "plugin"
if str(PLUGIN_SOURCE) not in sys.path:
    sys.path.insert(0, str(PLUGIN_SOURCE))

from underpaint_krita.connection import Connected, Disconnected, Failed, Received  # noqa: E402
from underpaint_krita.controller import Controller  # noqa: E402
from underpaint_krita.references import sent_size  # noqa: E402

MODELS = [
    ModelInfo(name="broken", kind="checkpoint", refused="cannot be read"),
    ModelInfo(name="tiny-sd15", kind="checkpoint", family="sd15", variant="regular"),
    ModelInfo(name="tiny-sd15-lora", kind="lora"),
    ModelInfo(name="tiny-sd15-inpaint", kind="checkpoint", family="sd15", variant="inpaint"),
]
WELCOME = Welcome(server="underpaint/test", device="cpu", models=MODELS, schedulers=["euler", "dpmpp_2m"],
                  limits=Limits(max_batch=8))


def solid(width: int, height: int, rgba: tuple[int, int, int, int]) -> bytes:
    return bytes(rgba) * (width * height)


def gradient(width: int, height: int) -> bytes:
    """RGBA where red follows x and green follows y: every crop of it is different."""
    base = bytearray(b"".join(bytes([x % 256, 0, (x * 3) % 256, 255]) for x in range(width)))
    rows = []
    for y in range(height):
        base[1::4] = bytes([y % 256]) * width
        rows.append(bytes(base))
    return b"".join(rows)


def box_mask(width: int, height: int, box: Rect, value: int = 255) -> bytes:
    """A full-canvas 8-bit selection covering `box`."""
    rows = []
    for y in range(height):
        inside = box.y <= y < box.bottom
        rows.append(bytes(box.x) + bytes([value if inside else 0]) * box.width + bytes(width - box.right))
    return b"".join(rows)


def alpha_bounds(rgba: bytes, width: int, height: int) -> Rect | None:
    """The bounds of a full-canvas RGBA layer's pixels that are not wholly transparent, as Krita's
    Node.bounds() gives them; None for an empty layer."""
    rows = [y for y in range(height) if rgba[y * width * 4 + 3:(y + 1) * width * 4:4].strip(b"\0")]
    if not rows:
        return None
    columns = [x for x in range(width) if any(rgba[(y * width + x) * 4 + 3] for y in rows)]
    return Rect(columns[0], rows[0], columns[-1] - columns[0] + 1, rows[-1] - rows[0] + 1)


def shrunk_nearest(image: Image, side: int) -> Image:
    """`image` shrunk to references.sent_size, taking the nearest pixel (Krita's glue smooths)."""
    width, height = sent_size(image.width, image.height, side)
    if (width, height) == (image.width, image.height):
        return image
    rows = []
    for y in range(height):
        source = image.data[(y * image.height // height) * image.width * 4:][:image.width * 4]
        rows.append(b"".join(source[(x * image.width // width) * 4:][:4] for x in range(width)))
    return Image(width=width, height=height, format="rgba8", data=b"".join(rows))


@dataclass
class FakeDocument:
    """A document as the controller sees it: one merged image, a selection, the layers added."""

    width: int
    height: int
    pixels: bytes = b""  # the merged visible image, straight RGBA
    selection: bytes | None = None  # full-canvas 8-bit coverage
    reads: list[Rect] = field(default_factory=list)
    preview: tuple[str, Image] | None = None
    preview_visible: bool = False
    layers: list[tuple[str, Image]] = field(default_factory=list)
    history_blob: bytes | None = None
    # layer id -> (name, full-canvas 8-bit alpha): the layers and groups regions can be made of
    alphas: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    active_layer: str | None = None
    # layer id -> (name, full-canvas straight RGBA): the layers controls can be made of
    rgbas: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    # layer id -> (name, the layer's own picture at its bounds): hidden layers imported from files
    pictures: dict[str, tuple[str, Image]] = field(default_factory=dict)
    files: dict[str, Image] = field(default_factory=dict)  # path -> the picture a readable file holds
    lists: dict[str, bytes] = field(default_factory=dict)  # the stored linked-layer lists by key
    painting: bool = False  # the artist holds the brush down: busy()
    scaled: list[int] = field(default_factory=list)  # each scale_with_layer's factor

    def __post_init__(self) -> None:
        if not self.pixels:
            self.pixels = solid(self.width, self.height, (90, 120, 150, 255))

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def selection_bounds(self) -> Rect | None:
        if self.selection is None:
            return None
        rows = [self.selection[y * self.width:(y + 1) * self.width] for y in range(self.height)]
        covered = [(y, row) for y, row in enumerate(rows) if row.strip(b"\0")]
        if not covered:
            return None
        left = min(len(row) - len(row.lstrip(b"\0")) for _, row in covered)
        right = max(len(row.rstrip(b"\0")) for _, row in covered)
        return Rect(left, covered[0][0], right - left, covered[-1][0] - covered[0][0] + 1)

    def read_pixels(self, rect: Rect) -> bytes:
        self.reads.append(rect)
        return crop(self.pixels, self.width, rect.x, rect.y, rect.width, rect.height)

    def change_token(self, rect: Rect) -> int:
        return zlib.crc32(crop(self.pixels, self.width, rect.x, rect.y, rect.width, rect.height))

    def quick_change_token(self) -> int:
        """Like Krita's thumbnail: sees only every 4th row, so a faint change can hide from it."""
        row = self.width * 4
        return zlib.crc32(b"".join(self.pixels[y * row:(y + 1) * row] for y in range(0, self.height, 4)))

    def read_selection(self, rect: Rect) -> bytes:
        return crop(self.selection, self.width, rect.x, rect.y, rect.width, rect.height, channels=1)

    def read_layer_alpha(self, layer_id: str, rect: Rect) -> bytes | None:
        if layer_id not in self.alphas:
            return None
        self.reads.append(rect)
        return crop(self.alphas[layer_id][1], self.width, rect.x, rect.y, rect.width, rect.height, channels=1)

    def read_layer_rgba(self, layer_id: str, rect: Rect) -> bytes | None:
        if layer_id not in self.rgbas:
            return None
        self.reads.append(rect)
        return crop(self.rgbas[layer_id][1], self.width, rect.x, rect.y, rect.width, rect.height)

    def read_layer_picture(self, layer_id: str, side: int) -> Image | None:
        if layer_id in self.pictures:
            return shrunk_nearest(self.pictures[layer_id][1], side)
        if layer_id not in self.rgbas:
            return None
        bounds = alpha_bounds(self.rgbas[layer_id][1], self.width, self.height)
        if bounds is None:
            return None
        self.reads.append(bounds)
        data = crop(self.rgbas[layer_id][1], self.width, bounds.x, bounds.y, bounds.width, bounds.height)
        return shrunk_nearest(Image(width=bounds.width, height=bounds.height, format="rgba8", data=data), side)

    def add_picture_layer(self, path: str, name: str) -> str | None:
        if path not in self.files:
            return None
        layer_id = f"picture-{len(self.pictures)}"
        self.pictures[layer_id] = (name, self.files[path])
        return layer_id

    def layer_thumbnail(self, layer_id: str, side: int) -> Image | None:
        return self.read_layer_picture(layer_id, side) if self.layer_name(layer_id) is not None else None

    def active_layer_id(self) -> str | None:
        return self.active_layer

    def layer_name(self, layer_id: str) -> str | None:
        layer = self.alphas.get(layer_id) or self.rgbas.get(layer_id) or self.pictures.get(layer_id)
        return layer[0] if layer is not None else None

    def load_list(self, key: str) -> bytes | None:
        return self.lists.get(key)

    def save_list(self, key: str, blob: bytes) -> None:
        self.lists[key] = blob

    def busy(self) -> bool:
        return self.painting

    def show_preview(self, name: str, image: Image) -> None:
        self.preview, self.preview_visible = (name, image), True

    def hide_preview(self) -> None:
        self.preview_visible = False

    def add_result_layer(self, name: str, image: Image) -> None:
        self.layers.append((name, image))

    def add_hidden_layer(self, name: str, image: Image) -> str:
        """Hidden, as in Krita: the merged image stays as it was; controls read it from `rgbas`."""
        self.add_result_layer(name, image)
        layer_id = f"control-{len(self.layers)}"
        pixels = bytearray(self.width * self.height * 4)
        row = image.width * 4
        for y in range(image.height):
            start = ((image.y + y) * self.width + image.x) * 4
            pixels[start:start + row] = image.data[y * row:(y + 1) * row]
        self.rgbas[layer_id] = (name, bytes(pixels))
        return layer_id

    def scale_with_layer(self, scale: int, name: str, image: Image) -> None:
        """Krita's Scale Image as far as the controller can tell: a larger canvas (nearest-neighbour here)."""
        rows = [self.pixels[y * self.width * 4:(y + 1) * self.width * 4] for y in range(self.height)]
        self.pixels = b"".join(b"".join(row[x * 4:x * 4 + 4] * scale for x in range(self.width)) * scale
                               for row in rows)
        self.width, self.height = self.width * scale, self.height * scale
        self.scaled.append(scale)
        self.add_result_layer(name, image)

    def load_history(self) -> bytes | None:
        return self.history_blob

    def save_history(self, blob: bytes) -> None:
        self.history_blob = blob


@dataclass
class FakeWorkspace:
    documents: list[FakeDocument] = field(default_factory=list)
    active: FakeDocument | None = None

    def active_document(self) -> FakeDocument | None:
        return self.active

    def is_open(self, document: FakeDocument) -> bool:
        return any(d is document for d in self.documents)


@dataclass
class ScriptedConnection:
    """A connection that records what the controller sends and replays the server messages given to `reply`."""

    url: str = "ws://test"
    token: str | None = None
    sent: list[Any] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    pending: list[Any] = field(default_factory=list)

    def submit(self, message: Any) -> None:
        self.sent.append(message)

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def set_url(self, url: str, token: str | None = None) -> None:
        self.url, self.token = url, token

    def events(self) -> list[Any]:
        out, self.pending = self.pending, []
        return out

    def reply(self, *messages: Any) -> None:
        self.pending.extend(m if isinstance(m, (Connected, Disconnected, Failed)) else Received(m) for m in messages)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def connected_controller(document: FakeDocument, prompt: str, **options: Any
                         ) -> tuple[Controller, ScriptedConnection, FakeWorkspace, FakeDocument]:
    """A controller over `document` alone (`options` go to Controller), just welcomed by its
    scripted server, with `prompt` typed in."""
    workspace = FakeWorkspace([document], document)
    connection = ScriptedConnection()
    controller = Controller(connection, workspace, **options)
    connection.reply(Connected(WELCOME))
    controller.poll()
    controller.settings.prompt = prompt
    return controller, connection, workspace, document


def server_url_or_own(request: pytest.FixtureRequest, models_dir: Path,
                      tmp_path_factory: pytest.TempPathFactory, *more: Path) -> Iterator[str]:
    """For a fixture: the suite's shared server (conftest's `server_url`) where there is one, else our own,
    with the models folders `more` besides `models_dir`."""
    try:
        yield request.getfixturevalue("server_url")
        return
    except pytest.FixtureLookupError:
        pass
    folders = [argument for folder in more for argument in ("--models", str(folder))]
    server = ServerProcess(models_dir, tmp_path_factory.mktemp("plugin-server"), *folders)
    server.start()
    try:
        yield server.url
    finally:
        server.kill()
