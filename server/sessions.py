"""What the server keeps of each live session between its frames (docs/live.md):

- the last start picture and its latents, so a frame whose start picture is unchanged (only the
  prompt or the strength moved) is not encoded again, and one where a stroke changed a part of it
  encodes that part only (imaging/changes.py);
- the last finished frame: its latents and how they became a layer, so `finalize` decodes them with
  the full VAE when the artist applies the frame, without denoising again.

Sessions belong to a connection and go when it closes. At most MAX_SESSIONS per connection and
BUDGET bytes in all are kept; past either, the least recently used session goes first. A frame that
is gone cannot be finalized (`not_found`); the client then keeps the picture it has.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch

from shared.crop import Rect
from shared.messages import Generate

from .errors import NotFound
from .imaging import changes
from .imaging.latents import Coder
from .models.entry import ModelEntry
from .modes.base import Mode

MAX_SESSIONS = 4
BUDGET = 1 << 30

Key = tuple[int, str]  # (connection, session)


@dataclass
class LiveFrame:
    """A finished live frame as `finalize` needs it."""

    request: Generate
    entry: ModelEntry
    mode: Mode  # turns a decoded picture into the layer
    latents: torch.Tensor
    seeds: list[int]
    info: dict[str, Any]

    @property
    def id(self) -> str:
        return self.request.id

    def footprint(self) -> int:
        """Bytes it holds, roughly: the latents, and the request's pixels about three times over (as sent,
        decoded, and the mode's working copies)."""
        pixels = sum(4 * image.width * image.height for image in (self.request.image, self.request.mask) if image)
        return self.latents.nbytes + 3 * pixels


@dataclass(frozen=True)
class Start:
    """A session's last start picture, what decided its latents besides the pixels, and the latents;
    `drift`: what the patches since its last whole encode may have moved them by (imaging/changes.py)."""

    context: bytes
    pixels: np.ndarray  # RGB
    latents: torch.Tensor
    drift: float = 0.0

    def footprint(self) -> int:
        return self.pixels.nbytes + self.latents.nbytes


@dataclass
class _Session:
    start: Start | None = None
    frame: LiveFrame | None = None

    def footprint(self) -> int:
        return (self.start.footprint() if self.start else 0) + (self.frame.footprint() if self.frame else 0)


@dataclass
class Encoder:
    """Encodes a session's start pictures with `coder`, from what it kept of the last one: an identical
    picture reuses its latents; where a part changed and the coder's latents depend only on nearby
    pixels, that part is encoded and patched into them, if the check at its border passes and the
    patches since the last whole encode stay within the bound all together (imaging/changes.py).
    Afterwards `way` says which it was ("reused", "tiles" or "whole"), `ring_error` what a patch tried
    measured."""

    sessions: LiveSessions
    key: Key
    context: bytes  # what besides the pixels decides the latents: the model and the coder
    coder: Coder
    margin: int = changes.MARGIN
    bound: float = changes.BOUND
    way: str | None = field(default=None, init=False)
    ring_error: float | None = field(default=None, init=False)

    @property
    def reused(self) -> bool | None:
        return None if self.way is None else self.way == "reused"

    def __call__(self, picture: PIL.Image.Image) -> torch.Tensor:
        pixels = np.asarray(picture.convert("RGB"))
        last = self.sessions.start(self.key)
        if last is not None and last.context == self.context and last.pixels.shape == pixels.shape:
            box = changes.changed_box(last.pixels, pixels)
            if box is None:
                self.way = "reused"
                return last.latents
            patched = self._patched(last, picture, pixels, box)
            if patched is not None:
                self.way = "tiles"
                self.sessions.keep_start(self.key, patched)
                return patched.latents
        self.way = "whole"
        latents = self.coder.encode(picture)
        self.sessions.keep_start(self.key, Start(self.context, pixels, latents))
        return latents

    def _patched(self, last: Start, picture: PIL.Image.Image, pixels: np.ndarray, box: Rect) -> Start | None:
        """What to keep with the changed part encoded and patched in, or None where a whole encode is due."""
        if not self.coder.local:
            return None
        width, height = picture.size
        scale = self.coder.scale
        patch = changes.patch_for(box, width, height, scale, margin=self.margin)
        if patch is None or patch.share(width, height) > changes.MAX_SHARE:
            return None
        area = patch.encoded
        part = self.coder.encode(picture.crop((area.x, area.y, area.right, area.bottom)))
        self.ring_error = changes.ring_error(last.latents, part, patch, scale)
        drift = last.drift + self.ring_error
        if drift > self.bound:
            return None
        return Start(self.context, pixels, changes.pasted(last.latents, part, patch, scale), drift)


class LiveSessions:
    def __init__(self, max_sessions: int = MAX_SESSIONS, budget: int = BUDGET):
        self.max_sessions = max_sessions
        self.budget = budget
        self._sessions: OrderedDict[Key, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def encoder(self, key: Key, context: str, coder: Coder) -> Encoder:
        return Encoder(self, key, context.encode(), coder)

    def start(self, key: Key) -> Start | None:
        with self._lock:
            session = self._sessions.get(key)
            if session is None or session.start is None:
                return None
            self._sessions.move_to_end(key)
            return session.start

    def keep_start(self, key: Key, start: Start) -> None:
        with self._lock:
            self._session(key).start = start
            self._trim()

    def keep_frame(self, key: Key, frame: LiveFrame) -> None:
        with self._lock:
            self._session(key).frame = frame
            self._trim()

    def frame(self, owner: int, frame_id: str) -> LiveFrame:
        """The kept frame `frame_id` of connection `owner`; NotFound when none is kept."""
        with self._lock:
            for (connection, _), session in self._sessions.items():
                if connection == owner and session.frame is not None and session.frame.id == frame_id:
                    return session.frame
        raise NotFound(f"no live frame {frame_id!r} is kept: only the latest result of each live session "
                       "can be finalized", "id")

    def forget(self, owner: int) -> None:
        """Drop every session of a connection that closed."""
        with self._lock:
            for key in [key for key in self._sessions if key[0] == owner]:
                del self._sessions[key]

    def _session(self, key: Key) -> _Session:
        session = self._sessions.setdefault(key, _Session())
        self._sessions.move_to_end(key)
        return session

    def _trim(self) -> None:
        """Least recently used first: sessions past the per-connection cap, then past the byte budget
        (the session used last always stays)."""
        owner = next(reversed(self._sessions))[0]
        mine = [key for key in self._sessions if key[0] == owner]
        for key in mine[:-self.max_sessions]:
            del self._sessions[key]
        while len(self._sessions) > 1 and sum(s.footprint() for s in self._sessions.values()) > self.budget:
            self._sessions.popitem(last=False)
