"""Underpaint for Krita: generate, inpaint and refine with a local Underpaint server.

Krita imports this package at startup. Its dependencies (our `shared` protocol package and the
pure-Python `msgpack` and `websockets`) travel in `vendor/`, which goes on sys.path before
anything imports them. Outside Krita (unit tests) nothing is registered.
"""

import os
import sys

_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

try:
    from krita import Krita
except ImportError:  # not running inside Krita
    Krita = None

if Krita is not None:
    from .extension import register

    register(Krita.instance())
