"""Live mode: a new frame whenever what the artist sees under the live region changes.

Krita-free. Every `interval` seconds the controller asks the session for a frame; the session
asks the document for a cheap change token first and reads pixels only when it changed, so an
idle canvas costs almost nothing. While the artist paints, reading would end the stroke
(stroke_guard.py), so a change is read once the stroke is over. The server keeps only the newest
frame of a session (docs/live.md), so sending eagerly never piles up work.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.crop import Rect
from shared.messages import Image, Live

from .controls import ControlLayer
from .references import ReferenceLayer
from .regions import RegionPrompt
from .requests import Canvas, Settings, build_request, source_rect


class LiveCanvas(Canvas, Protocol):
    def change_token(self, rect: Rect) -> int:
        """A number that changes whenever the pixels a request for `rect` would read change
        (plugin/document.py hashes the active layer's pixels and the layer stack)."""

    def quick_change_token(self) -> int:
        """A far cheaper number that changes with almost every change (document.py hashes a
        thumbnail of the active layer, ~2 ms on a 4096² canvas); it may miss a faint one."""


@dataclass
class LiveResult:
    id: str  # the frame's: `finalize` asks for it at full quality
    prompt: str
    image: Image
    seed: int
    # Decoded by the model's full VAE already (the server has no tiny autoencoder for the model):
    # Apply needs nothing more from the server.
    full_quality: bool = False


@dataclass
class LiveSession:
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    interval: float = 0.2
    # How often the exact token is computed even though the quick one did not move, so a change
    # too faint for the thumbnail still goes out within this time.
    exact_interval: float = 2.0
    frames: dict[str, str] = field(default_factory=dict)  # id -> prompt of the frames not finished
    _checked: float = -math.inf
    _exact_checked: float = -math.inf
    _quick: Any = None
    _key: Any = None

    def next_frame(self, canvas: LiveCanvas, settings: Settings, now: float,
                   regions: tuple[RegionPrompt, ...] = (), controls: tuple[ControlLayer, ...] = (),
                   references: tuple[ReferenceLayer, ...] = (),
                   may_read: Callable[[], bool] = lambda: True) -> Live | None:
        """A frame to send, or None when it is too early or nothing changed since the last one.

        `may_read()` says whether the canvas may be read now (stroke_guard.py). When it may not,
        nothing is remembered and the next call looks again, however soon: the frame goes out at
        the first call after the artist stops painting, not up to an interval later."""
        if now - self._checked < self.interval:
            return None
        rect = source_rect(canvas, settings.fill)
        # The exact token reads every pixel of the region (~100 ms on a whole 4096² canvas), so it
        # runs only when the quick token moved or exact_interval passed: detection stays a few
        # percent of one core (docs/live.md).
        layers = (regions, controls, references)
        quick = (canvas.quick_change_token(), rect, dataclasses.astuple(settings), layers)
        if quick == self._quick and now - self._exact_checked < self.exact_interval:
            self._checked = now
            return None
        if not may_read():
            return None
        self._checked, self._quick, self._exact_checked = now, quick, now
        key = (canvas.change_token(rect), rect, dataclasses.astuple(settings), layers)
        if key == self._key:
            return None
        self._key = key  # also on failure below: a broken setting is reported once, not every interval
        frame = build_request(canvas, settings, uuid.uuid4().hex, live_session=self.id, regions=regions,
                              controls=controls, references=references)
        self.frames[frame.id] = frame.prompt
        return frame

    def owns(self, frame_id: str | None) -> bool:
        return frame_id in self.frames

    def finish(self, frame_id: str) -> str:
        """Forget a frame that got its last message; returns its prompt."""
        return self.frames.pop(frame_id)
