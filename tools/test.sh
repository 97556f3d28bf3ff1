#!/usr/bin/env bash
# Installs what a fresh machine lacks for the test suite, then runs it.
# Usage: bash tools/test.sh [pytest arguments]
#
# The suite runs in the project's own environment, .venv, made from requirements/test.lock (the
# exact versions users get from the installer); it is made again whenever the lock changes, and
# no other Python's packages are touched.
set -euo pipefail
cd "$(dirname "$0")/.."

# Krita (for the real-Krita tests), Xvfb, xdotool and ImageMagick (GUI Krita: strokes and
# screenshots). Needs root; elsewhere the Krita tests skip with a reason.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
    && ! { command -v kritarunner && command -v Xvfb && command -v xdotool && command -v import; } >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq krita xvfb xdotool imagemagick >/dev/null
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "tools/test.sh needs Python 3.11 or newer as $python (set PYTHON=...)" >&2
    exit 2
fi
venv=.venv
lock=requirements/test.lock
stamp="$(sha256sum "$lock" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ "$(cat "$venv/.lock-stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "tools/test.sh: making $venv from $lock" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # PyTorch's CPU build first, from PyTorch's own index (PyPI's Linux build is the multi-GB CUDA
    # one); a local wheel in pip's find-links is taken before the index is asked.
    torch=$(grep -oE '^torch==[^ ;]+' "$lock")
    "$venv/bin/python" -m pip install -q --no-deps --retries 1 --extra-index-url https://download.pytorch.org/whl/cpu "$torch"
    # --no-deps: the lock is complete, and leaves out what requirements/excludes.txt says.
    "$venv/bin/python" -m pip install -q --no-deps -r "$lock"
    "$venv/bin/python" -m pip install -q --no-deps -e .
    echo "$stamp" > "$venv/.lock-stamp"
fi

export HF_HUB_OFFLINE=1
exec "$venv/bin/python" -m pytest "$@"
