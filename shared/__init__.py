"""Underpaint's wire protocol and the pure math both the server and the Krita plugin need.

Everything in this package runs on plain Python >= 3.10 with only `msgpack` installed,
because the Krita plugin imports it inside Krita's own Python (no numpy, no torch, no Qt).
"""

PROTOCOL_VERSION = 1
DEFAULT_PORT = 9860
