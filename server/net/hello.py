"""The handshake: a client's `hello` names the protocol it speaks and, where the server asks for
one, the token; nothing else a client sends is served before it is accepted."""

from __future__ import annotations

import hmac

from shared import PROTOCOL_VERSION
from shared.messages import Hello

from ..errors import ProtocolMismatch, Unauthorized


def check(hello: Hello, token: str | None) -> None:
    """Accept `hello`, or raise the error after which the connection is closed."""
    if hello.protocol != PROTOCOL_VERSION:
        raise ProtocolMismatch(f"this server speaks protocol {PROTOCOL_VERSION}, the client {hello.protocol}",
                               "protocol")
    # In constant time, so the token cannot be guessed a character at a time.
    if token and not hmac.compare_digest((hello.token or "").encode(), token.encode()):
        raise Unauthorized("wrong or missing token", "token")
