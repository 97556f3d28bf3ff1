#!/usr/bin/env bash
# Refreshes requirements/server.lock and requirements/test.lock from pyproject.toml with uv.
# Usage: bash tools/lock.sh [uv pip compile options, e.g. --upgrade-package diffusers]
#
# PyTorch's CPU build comes from its own index; where that index cannot be reached, point
# TORCH_FIND_LINKS at a folder holding the torch wheel named in requirements/torch.in.
set -euo pipefail
cd "$(dirname "$0")/.."

uv=${UV:-$(command -v uv || true)}
if [ -z "$uv" ]; then
    echo "tools/lock.sh needs uv: pip install uv" >&2
    exit 2
fi
torch_source=${TORCH_FIND_LINKS:-https://download.pytorch.org/whl/cpu/torch/}
compile=("$uv" pip compile --quiet --universal --python-version 3.11 --find-links "$torch_source"
         --constraint requirements/torch.in --excludes requirements/excludes.txt --no-header --annotation-style line "$@")

header() { printf '# %s\n# Refresh with: bash tools/lock.sh (see docs/install.md)\n' "$1"; }

{ header "The server's environment, exactly as tested."
  "${compile[@]}" pyproject.toml; } > requirements/server.lock.new
mv requirements/server.lock.new requirements/server.lock
# The test lock keeps every version of the server lock, so tests run what users get.
{ header "The server's environment plus the test tools: what tools/test.sh installs."
  "${compile[@]}" pyproject.toml --extra test --constraint requirements/server.lock; } > requirements/test.lock.new
mv requirements/test.lock.new requirements/test.lock
echo "requirements/server.lock: $(grep -c '==' requirements/server.lock) packages"
echo "requirements/test.lock:   $(grep -c '==' requirements/test.lock) packages"
