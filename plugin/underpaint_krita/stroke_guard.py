"""When the plugin may touch the canvas: never while the artist paints, and not right after.

Krita ends a stroke in progress when a script waits for the image: `Document.waitForDone()`, and
every Node call that runs as an undoable command and waits for it (`setBlendingMode`,
`addChildNode`, `remove`...). A layer added by a script also becomes the active layer once control
returns to Krita's event loop, so a stroke begun in that moment lands on it. Reading the canvas
for live mode and writing the preview layer need exactly those calls, so they wait until the
document is not busy (plugin/document.py: no pointer button held, no stroke open or still being
processed) and has stayed so for `settle` seconds: a quick series of strokes (hatching) is not
held up between its strokes by the plugin's work. docs/live.md has what this costs in freshness.

Krita-free: the controller asks `allows()` with the document's answer and its clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class StrokeGuard:
    settle: float = 0.25  # seconds without a stroke before the canvas is touched
    _busy_at: float = -math.inf  # when the document was last seen busy

    def allows(self, busy: bool, now: float) -> bool:
        """Whether the canvas may be read or written now, given whether the document is busy now."""
        if busy:
            self._busy_at = now
            return False
        return now - self._busy_at >= self.settle
