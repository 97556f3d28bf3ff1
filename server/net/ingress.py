"""What arrives on each connection, measured: how many bytes of unfinished messages it holds, and
whether they keep coming.

websockets parses frames as bytes arrive (its sans-I/O protocol) and assembles fragmented
messages; a message reaches the server only once complete. Until then nothing in the server sees
it, so a client could hold a slot with a message sent one fragment a second, or hold memory with a
250 MB frame that never ends. This subclass of websockets' connection (handed to `serve` as
`create_connection`) overrides asyncio's `data_received` and websockets' `process_event`, the two
places where bytes and frames come in, to count them, and `connection_made`, to read less at once.
The policy (deadlines, what to tell the client) is the connection's (connection.py); the
server-wide budget is `Receiving`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, Frame

# asyncio's selector transports read up to 256 KiB at a time, and websockets parses a read whole before
# the server can stop reading: 256 KiB of 7-byte frames become ~37 000 frame objects, 3.4 MB of heap
# (measured after a one-second stall of the event loop). Reads of 16 KiB bound that to what any
# connection holds anyway (0.67 MB), and large messages arrive as fast (a 64 MiB frame: 0.27 s
# against 0.30 s).
READ_SIZE = 16 * 1024


class Receiving:
    """Bytes of unfinished or undecoded messages the server holds for all connections, and its budget."""

    def __init__(self, budget: int):
        self.budget = budget
        self.held = 0


class IngressConnection(ServerConnection):
    """A websockets server connection that knows what it holds of messages not yet handled.

    `held` counts the parser's buffer (a frame still arriving) plus the payload of frames handed
    on and not yet `release`d by the server (a fragmented message being assembled, complete messages
    waiting or being decoded). Past `limit` bytes, or when the server as a whole would go over its
    `Receiving` budget, reading stops and `refused` says which; the connection's owner then closes it.
    """

    def __init__(self, *args: Any, receiving: Receiving, limit: int | None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.receiving = receiving
        self.limit = limit
        self.held = 0
        self.refused: str | None = None  # "limit" or "budget" once reading has stopped for that reason
        self.on_refused: Callable[[], None] | None = None  # told at once when reading stops
        self._handed_on = 0  # payload bytes of data frames given to the assembler, not yet released
        self._fragmented = False
        # The message now arriving: bytes received since `_since` (its first byte, or the last window).
        self._since: float | None = None
        self._arrived = 0

    # --- what asyncio and websockets call ---------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if hasattr(transport, "max_size"):  # selector transports; Windows' proactor reads 64 KiB at most
            transport.max_size = READ_SIZE

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_progress:
            if self._since is None:
                self._since, self._arrived = time.monotonic(), 0
            self._arrived += len(data)
        else:
            self._since = None
        self._account()

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
            self._handed_on += len(event.data)
            self._fragmented = not event.fin
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._handed_on = 0
        self._set_held(0)

    # --- what the server calls ---------------------------------------------------------------------------

    @property
    def in_progress(self) -> bool:
        """Whether a message has begun to arrive and is not complete yet."""
        return self._fragmented or bool(self._unparsed())

    def release(self, size: int) -> None:
        """The server is done with a message of `size` bytes."""
        self._handed_on = max(0, self._handed_on - size)
        self._account()

    def stalled(self, now: float, window: float, least: int) -> bool:
        """Whether the message now arriving got fewer than `least` bytes in the last `window` seconds.
        Measured in consecutive windows from its first byte; while reading is paused (the server stopped
        reading this client) no byte can come, and the measure starts again."""
        if self._since is None or not self.in_progress:
            return False
        if not self.transport.is_reading():
            self._since, self._arrived = now, 0
            return False
        if now - self._since < window:
            return False
        if self._arrived < least:
            return True
        self._since, self._arrived = now, 0
        return False

    # --- accounting ------------------------------------------------------------------------------------------

    def _unparsed(self) -> int:
        # Read, never written: the bytes websockets' parser holds of a frame it has not finished.
        return len(self.protocol.reader.buffer)

    def _account(self) -> None:
        if self.refused is not None:
            return
        held = self._unparsed() + self._handed_on
        if self.limit is not None and held > self.limit:
            self._refuse("limit")
        elif held > self.held and self.receiving.held - self.held + held > self.receiving.budget:
            self._refuse("budget")
        else:
            self._set_held(held)

    def _refuse(self, why: str) -> None:
        self.refused = why
        self.transport.pause_reading()
        # What it holds is as good as gone: the connection is closed within the close timeout.
        self._set_held(0)
        if self.on_refused is not None:
            self.on_refused()

    def _set_held(self, held: int) -> None:
        self.receiving.held += held - self.held
        self.held = held
