#!/usr/bin/env bash
# Installs what a fresh machine lacks for the test suite, then runs it.
# Usage: bash tools/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Krita (for the real-Krita tests), Xvfb and ImageMagick (screenshots). Needs root; elsewhere the
# Krita tests skip with a reason.
if ! command -v kritarunner >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq krita xvfb imagemagick >/dev/null
fi

# torch first and pinned: the CPU build of this version lies on this machine's disk, while an
# unpinned torch would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"

export HF_HUB_OFFLINE=1
python -m pytest "$@"
