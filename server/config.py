"""Everything `underpaint serve` can be told, in one place."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from shared import DEFAULT_PORT
from shared.messages import Limits

DEFAULT_ORIGINS = ()


@dataclass
class ServerConfig:
    models: list[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    device: str = "auto"
    dtype: str = "auto"
    # GPU options (models/loading.py, measured by bench/gpu.py): NHWC layout, torch.compile of the UNet.
    channels_last: bool = False
    compile: bool = False
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
    log_file: Path | None = None
    # Pings keep idle connections open through NATs and proxies and find peers that vanished.
    ping_interval: float = 20.0
    ping_timeout: float = 60.0

    def check(self) -> None:
        """Refuse configurations that would expose the server: raises ValueError with the fix."""
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"--host {self.host} accepts connections from other machines; "
                "set --token SECRET so only clients that know it can use the server"
            )
        if self.max_connections < 1:
            raise ValueError(f"--max-connections {self.max_connections} would refuse every client; use 1 or more")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
