"""What the server keeps of each live session between its frames (docs/live.md):

- the latents of the last start picture, so a frame whose start picture is unchanged (only the
  prompt or the strength moved) is not encoded again;
- the last finished frame: its latents and how they became a layer, so `finalize` decodes them with
  the full VAE when the artist applies the frame, without denoising again.

Sessions belong to a connection and go when it closes. At most MAX_SESSIONS per connection and
BUDGET bytes in all are kept; past either, the least recently used session goes first. A frame that
is gone cannot be finalized (`not_found`); the client then keeps the picture it has.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import PIL.Image
import torch

from shared.messages import Generate

from .errors import NotFound
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


@dataclass
class _Session:
    start: tuple[bytes, torch.Tensor] | None = None  # digest of the start picture, its latents
    frame: LiveFrame | None = None

    def footprint(self) -> int:
        return (self.start[1].nbytes if self.start else 0) + (self.frame.footprint() if self.frame else 0)


@dataclass
class Encoder:
    """Encodes a session's start pictures with `encode`, reusing the last latents for an identical one.
    `reused` tells afterwards whether it did."""

    sessions: LiveSessions
    key: Key
    context: bytes  # what besides the pixels decides the latents: the model and the coder
    encode: Callable[[PIL.Image.Image], torch.Tensor]
    reused: bool | None = field(default=None, init=False)

    def __call__(self, picture: PIL.Image.Image) -> torch.Tensor:
        digest = hashlib.blake2b(self.context + f"{picture.mode}{picture.size}".encode() + picture.tobytes(),
                                 digest_size=16).digest()
        latents = self.sessions.start_latents(self.key, digest)
        self.reused = latents is not None
        if latents is None:
            latents = self.encode(picture)
            self.sessions.keep_start(self.key, digest, latents)
        return latents


class LiveSessions:
    def __init__(self, max_sessions: int = MAX_SESSIONS, budget: int = BUDGET):
        self.max_sessions = max_sessions
        self.budget = budget
        self._sessions: OrderedDict[Key, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def encoder(self, key: Key, context: str, encode: Callable[[PIL.Image.Image], torch.Tensor]) -> Encoder:
        return Encoder(self, key, context.encode(), encode)

    def start_latents(self, key: Key, digest: bytes) -> torch.Tensor | None:
        with self._lock:
            session = self._sessions.get(key)
            if session is None or session.start is None or session.start[0] != digest:
                return None
            self._sessions.move_to_end(key)
            return session.start[1]

    def keep_start(self, key: Key, digest: bytes, latents: torch.Tensor) -> None:
        with self._lock:
            self._session(key).start = (digest, latents)
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
