"""Everything `underpaint serve` can be told, in one place."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from shared import DEFAULT_PORT
from shared.messages import Limits

DEFAULT_ORIGINS = ()
MIB = 1024 * 1024


def in_mib(size: int) -> str:
    mib = size / MIB
    return f"{mib:.1f} MiB" if mib < 100 else f"{mib:,.0f} MiB".replace(",", " ")


def memory_share(fraction: float) -> int:
    """`fraction` of this machine's memory, in bytes: the default size of a byte budget."""
    return int(psutil.virtual_memory().total * fraction)


@dataclass
class ServerConfig:
    models: list[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    device: str = "auto"
    dtype: str = "auto"
    outputs: Path = field(default_factory=lambda: Path("outputs"))
    token: str | None = None
    limits: Limits = field(default_factory=Limits)
    cache_size: int = 1
    # Browsers send an Origin header; a web page must not drive the local server, so only
    # connections without Origin (plugins, scripts) or from these origins are accepted.
    allowed_origins: tuple[str, ...] = DEFAULT_ORIGINS
    max_queued_per_connection: int = 32
    max_queued: int = 256
    # Open websocket connections, greeted or not. The plugin holds one or two and the load tests 20, far
    # below this, yet a client opening sockets in a loop is stopped before the server runs out of files.
    max_connections: int = 32
    # Connections that have not said hello (strangers, on a server with a token) get only this many of
    # the slots, and a newcomer takes the place of the one that has waited longest, so strangers can
    # never keep the artist out (docs/reliability.md, "Connections").
    hello_slots: int = 4
    hello_timeout: float = 10.0
    # A message that has begun to arrive must bring at least min_receive_rate bytes a second, measured
    # over each receive_window, until it is complete.
    min_receive_rate: int = 64 * 1024
    receive_window: float = 10.0
    # Bytes held for clients: the inputs of queued and running jobs (all connections, and each one) and
    # the messages still arriving or being decoded. Defaults: an eighth, a sixteenth and a sixteenth of
    # this machine's memory.
    queue_budget: int = field(default_factory=lambda: memory_share(1 / 8))
    connection_queue_budget: int = field(default_factory=lambda: memory_share(1 / 16))
    receive_budget: int = field(default_factory=lambda: memory_share(1 / 16))
    log_file: Path | None = None
    # Pings keep idle connections open through NATs and proxies and find peers that vanished.
    ping_interval: float = 20.0
    ping_timeout: float = 60.0

    def check(self) -> None:
        """Refuse configurations that would expose the server: raises ValueError with the fix."""
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"--host {self.host} accepts connections from other machines; "
                "set a token (--token-file PATH or the UNDERPAINT_TOKEN environment variable) so only clients "
                "that know it can use the server"
            )
        if self.max_connections < 1:
            raise ValueError(f"--max-connections {self.max_connections} would refuse every client; use 1 or more")
        if self.hello_slots < 1:
            raise ValueError(f"hello_slots {self.hello_slots} would refuse every client; use 1 or more")
        for name in ("queue_budget", "connection_queue_budget", "receive_budget"):
            if getattr(self, name) < MIB:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1 MiB")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
