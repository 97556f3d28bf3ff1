"""A websocket client whose reading and writing the test controls byte by byte.

The real client (shared.client) reads continuously in a background thread and answers pings. To
play a client that stops reading, never answers pings, floods the server, or vanishes mid-frame,
this one drives websockets' sans-I/O protocol over a plain socket: nothing happens unless asked.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from shared import PROTOCOL_VERSION, codec
from shared.messages import Hello, Welcome


class RawClient:
    def __init__(self, url: str, *, receive_buffer: int | None = None, origin: str | None = None):
        uri = parse_uri(url)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Before connecting, so the window the server sees is small from the start.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.socket.connect((uri.host, uri.port))
        self.protocol = ClientProtocol(uri, max_size=None)
        request = self.protocol.connect()
        if origin is not None:
            request.headers["Origin"] = origin
        self.protocol.send_request(request)
        self._unsent = bytearray()
        self._frames: list[Any] = []
        self.flush()
        while not any(isinstance(event, Response) for event in self._read_events(timeout=10)):
            pass
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc

    def hello(self, token: str | None = None) -> Welcome:
        self.send(Hello(protocol=PROTOCOL_VERSION, client="raw", token=token))
        welcome = self.receive(timeout=10)
        assert isinstance(welcome, Welcome), welcome
        return welcome

    # --- writing --------------------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        self.send_raw(codec.encode(message))

    def send_raw(self, frame: bytes) -> None:
        self.protocol.send_binary(frame)
        self.flush()

    def try_send_raw(self, frame: bytes) -> bool:
        """Queue `frame` and write what the socket takes without blocking; False once the socket is
        full (the frame stays queued and goes out with a later write)."""
        self.protocol.send_binary(frame)
        self._unsent += b"".join(self.protocol.data_to_send())
        return self.flush_nowait()

    def flush(self) -> None:
        self._unsent += b"".join(self.protocol.data_to_send())
        self.socket.sendall(self._unsent)
        self._unsent.clear()

    def flush_nowait(self) -> bool:
        """Write what the socket takes now; True when nothing is left unsent."""
        self.socket.setblocking(False)
        try:
            while self._unsent:
                sent = self.socket.send(self._unsent)
                del self._unsent[:sent]
        except BlockingIOError:
            pass
        finally:
            self.socket.setblocking(True)
        return not self._unsent

    # --- reading --------------------------------------------------------------------------------------

    def receive(self, timeout: float = 30) -> Any:
        """The next protocol message; answers pings on the way, as a live client does."""
        deadline = time.monotonic() + timeout
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the server")
            self._read_events(timeout=left)
            self.flush()  # pongs, and the reply to a close
        return self._frames.pop(0)

    def closed(self, timeout: float) -> bool:
        """Whether the server closes the connection within `timeout` seconds (reading and discarding)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.socket], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                try:
                    if not self.socket.recv(1 << 16):
                        return True
                except ConnectionResetError:
                    return True
        return False

    def _read_events(self, timeout: float) -> list[Any]:
        """What the socket has now; messages are kept for `receive`, also those that came with the
        handshake's response (a server may speak first)."""
        ready, _, _ = select.select([self.socket], [], [], timeout)
        if not ready:
            return []
        data = self.socket.recv(1 << 20)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        events = self.protocol.events_received()
        if not data and not events:
            raise ConnectionError("the server closed the connection")
        self._frames += [codec.decode_server(e.data) for e in events if getattr(e, "opcode", None) is Opcode.BINARY]
        return events

    # --- ending ---------------------------------------------------------------------------------------

    def abort(self) -> None:
        """Vanish: reset the connection without a closing handshake (a crash, a pulled cable)."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.socket.close()

    def close(self) -> None:
        self.socket.close()
