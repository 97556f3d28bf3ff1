"""When a connection is cut off for how it sends: no hello in time, a message that stopped arriving,
too much unfinished input. Each case is an `error` the client is told before the connection closes.

The numbers are the server's configuration (ServerConfig); the measurements are the connection's
(ingress.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from websockets.frames import CloseCode

from shared import errors as codes
from shared.messages import Error

from ..config import ServerConfig, in_mib
from .ingress import IngressConnection

# A hello is a few hundred bytes; before it a connection may hold no more than this of a message.
HELLO_MESSAGE = 64 * 1024


@dataclass(frozen=True)
class Cut:
    """Why a connection is closed: the error it is told, and the close code."""

    error: Error
    code: CloseCode


def check(config: ServerConfig, websocket: IngressConnection, greeted: bool, age: float, now: float) -> Cut | None:
    """The reason to cut a connection `age` seconds old off now, if there is one."""
    if websocket.refused == "limit":
        return Cut(Error(code=codes.TOO_LARGE, field="frame", message=(
            f"before hello a message may hold at most {HELLO_MESSAGE // 1024} KiB; send hello first")),
            CloseCode.MESSAGE_TOO_BIG)
    if websocket.refused == "budget":
        return busy(f"the server is receiving {in_mib(websocket.receiving.held)} of unfinished messages, as much as "
                    f"its budget of {in_mib(websocket.receiving.budget)} (--receive-budget) allows; send it again "
                    "shortly")
    if not greeted and age > config.hello_timeout:
        return Cut(Error(code=codes.UNAUTHORIZED, field="type", message=(
            f"no hello within {config.hello_timeout:g} s of connecting")), CloseCode.POLICY_VIOLATION)
    least = int(config.min_receive_rate * config.receive_window)
    if websocket.stalled(now, config.receive_window, least):
        return Cut(Error(code=codes.BAD_REQUEST, field="frame", message=(
            f"a message must keep arriving at {config.min_receive_rate // 1024} KiB/s or faster; less than "
            f"{least // 1024} KiB of this one came in {config.receive_window:g} s")), CloseCode.POLICY_VIOLATION)
    return None


def busy(message: str) -> Cut:
    return Cut(Error(code=codes.BUSY, message=message), CloseCode.TRY_AGAIN_LATER)
