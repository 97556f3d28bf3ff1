"""When the plugin may touch the canvas: never while the artist paints, and only once the
document has been quiet for the guard's settle time."""

from __future__ import annotations

import pytest
from plugin_support import PLUGIN_SOURCE  # noqa: F401  (puts the plugin on sys.path)
from underpaint_krita.stroke_guard import StrokeGuard

# (seconds, whether the document is busy then) -> whether the canvas may be touched then
CASES = {
    "quiet from the start": ([(0.0, False), (0.05, False)], [True, True]),
    "never while busy": ([(0.0, True), (1.0, True), (5.0, True)], [False, False, False]),
    "settle after a stroke": ([(0.0, True), (0.1, False), (0.2, False), (0.25, False), (0.4, False)],
                              [False, False, False, True, True]),
    "a new stroke before settling starts over": (
        [(0.0, True), (0.2, False), (0.3, True), (0.5, False), (0.55, False)], [False, False, False, False, True]),
    "hatching: short gaps never let it in": (
        [(0.0, True), (0.1, False), (0.2, True), (0.3, False), (0.4, True), (0.6, False), (0.65, False)],
        [False, False, False, False, False, False, True]),
}


@pytest.mark.parametrize("name", CASES)
def test_the_canvas_is_touched_only_after_the_artist_stopped_for_the_settle_time(name: str) -> None:
    observations, expected = CASES[name]
    guard = StrokeGuard(settle=0.25)
    assert [guard.allows(busy, now) for now, busy in observations] == expected


def test_without_a_settle_time_the_first_quiet_moment_is_enough() -> None:
    guard = StrokeGuard(settle=0.0)
    assert [guard.allows(busy, now) for now, busy in [(0.0, True), (0.01, False)]] == [False, True]
