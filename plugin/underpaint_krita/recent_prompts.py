"""The artist's last prompts, newest first, recallable from the prompt box; they outlive Krita.

Krita-free: kept in the preferences (Krita's settings inside Krita) as one JSON list.
"""

from __future__ import annotations

import json
import logging

from .preferences import RECENT_PROMPTS, Preferences

log = logging.getLogger(__name__)

LIMIT = 20
PROMPT_CHARS = 2000  # a longer prompt is kept whole in the document's history, not here


class RecentPrompts:
    def __init__(self, preferences: Preferences, limit: int = LIMIT):
        self.preferences, self.limit = preferences, limit
        self.prompts = _stored(preferences.read(RECENT_PROMPTS))[:limit]

    def add(self, prompt: str) -> None:
        """Put `prompt` first (once: an older copy of it moves up) and store the list."""
        prompt = prompt.strip()
        if not prompt or len(prompt) > PROMPT_CHARS:
            return
        self.prompts = [prompt, *(p for p in self.prompts if p != prompt)][:self.limit]
        self.preferences.write(RECENT_PROMPTS, json.dumps(self.prompts, ensure_ascii=False))

    def step(self, current: str, direction: int) -> str | None:
        """The prompt older (+1) or newer (-1) than `current` in the list; None past either end.
        A prompt not in the list is newer than all of them."""
        stripped = current.strip()
        index = self.prompts.index(stripped) if stripped in self.prompts else -1
        wanted = index + direction
        return self.prompts[wanted] if 0 <= wanted < len(self.prompts) else None


def _stored(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        prompts = json.loads(value)
    except ValueError:
        log.warning("forgot the recent prompts: they were not stored as JSON")
        return []
    if not isinstance(prompts, list):
        return []
    return [p for p in prompts if isinstance(p, str) and p.strip() and len(p) <= PROMPT_CHARS]
