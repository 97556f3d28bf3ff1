"""Choices that outlive the docker and Krita itself: the server's address and token, the fill mode,
the style, the recent prompts, which of the docker's sections are open, the detail of large canvases.

Krita-free. Inside Krita they are entries of Krita's settings (extension.py's `KritaPreferences`,
kritarc group `underpaint`); scripts and tests keep them in memory.
"""

from __future__ import annotations

from typing import Protocol

SERVER_URL = "server_url"
TOKEN = "token"
FILL = "fill"
STYLE = "style"
RECENT_PROMPTS = "recent_prompts"
OPEN_SECTIONS = "open_sections"  # the docker's open sections, by name, comma-separated
DETAIL = "detail"


class Preferences(Protocol):
    def read(self, key: str) -> str | None:
        """The stored value; None when nothing (or an empty text) is stored."""

    def write(self, key: str, value: str) -> None: ...


class MemoryPreferences:
    """Preferences that last as long as the object: where nothing outlives the controller (scripts, tests)."""

    def __init__(self, values: dict[str, str] | None = None):
        self.values = dict(values or {})

    def read(self, key: str) -> str | None:
        return self.values.get(key) or None

    def write(self, key: str, value: str) -> None:
        self.values[key] = value
