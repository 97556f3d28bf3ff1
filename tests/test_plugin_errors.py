"""Every error the artist can meet reads as a sentence, not a code."""

from __future__ import annotations

import pytest
from plugin_support import PLUGIN_SOURCE  # noqa: F401  (puts the plugin on sys.path)
from underpaint_krita.errors import UserError, artist_message

from shared import errors as codes

PROTOCOL_CODES = [value for name, value in vars(codes).items() if name.isupper() and isinstance(value, str)]


@pytest.mark.parametrize("code", PROTOCOL_CODES)
def test_every_protocol_code_has_its_own_sentence(code: str) -> None:
    message = artist_message(code)
    assert message != artist_message("no-such-code")
    assert message[0].isupper() and message.endswith(".")
    assert "_" not in message  # no code names like out_of_memory


@pytest.mark.parametrize(
    "code, detail, expected",
    [
        (codes.TOO_LARGE, "image is 5000x10, the largest side allowed is 4096",
         "The image or selection is too large for the server. (Image is 5000x10, the largest side allowed is 4096.)"),
        (codes.OUT_OF_MEMORY, "try a batch of 1.", "The graphics card ran out of memory. Try a smaller image, "
         "selection or batch. (Try a batch of 1.)"),
        (codes.EMPTY_SELECTION, "mask has no covered pixel",
         "The selection is empty. Select the area to repaint first."),
        (codes.INTERNAL, "Traceback ...", "The server failed on this job. Its log has the details."),
        ("future_code", "a newer server says why", "Something went wrong. (A newer server says why.)"),
        ("future_code", None, "Something went wrong."),
    ],
)
def test_detail_is_shown_only_where_it_helps(code: str, detail: str | None, expected: str) -> None:
    assert artist_message(code, detail) == expected


def test_user_error_carries_code_and_sentence() -> None:
    error = UserError(codes.BUSY)
    assert error.code == codes.BUSY
    assert str(error) == "The server is busy: it has too many jobs or connections. Wait a moment and try again."
