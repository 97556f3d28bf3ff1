#!/usr/bin/env bash
# A screenshot of Krita with the Underpaint docker after one inpaint, for docs/images/docker.png.
#
# Usage: bash tools/screenshot.sh [OUTPUT.png]
# Needs krita, Xvfb and ImageMagick (apt-get install krita xvfb imagemagick). Everything runs in a
# throw-away folder: a server on a free port (the built-in demo model when it is installed, else the
# tiny test models), a private X display, and Krita in a clean environment with the plugin installed
# the way the installer does it. The test driver plugin (tests/krita) poses the scene.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUTPUT=$(realpath -m "${1:-docs/images/docker.png}")
WORK=$(mktemp -d)
DISPLAY_NUMBER=${SCREENSHOT_DISPLAY:-99}
PIDS=()
cleanup() {
    # Krita first, the display it draws on last.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[i]}" 2>/dev/null || true
        wait "${PIDS[i]}" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# 1. Krita's folders with the plugin and the driver installed and enabled; the job for the driver.
PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MODEL=$(python - "$WORK" "$PORT" <<'EOF'
import json, shutil, sys
from pathlib import Path

from installer.krita_plugin import build_plugin
from server.models.demo import MODEL_DIR, NAME
from shared.images import encode_png

work, port = Path(sys.argv[1]), sys.argv[2]
pykrita = work / "data" / "krita" / "pykrita"
build_plugin(pykrita)
shutil.copytree("tests/krita/underpaint_test_driver", pykrita / "underpaint_test_driver")
shutil.copy("tests/krita/underpaint_test_driver.desktop", pykrita)
(work / "config").mkdir()
(work / "config" / "kritarc").write_text(
    "[python]\nenable_underpaint_krita=true\nenable_underpaint_test_driver=true\n\n"
    f"[underpaint]\nserver_url=ws://127.0.0.1:{port}\n"
)
(work / "start.png").write_bytes(encode_png(bytes([255, 255, 255, 255]) * 64 * 64, 64, 64))
demo = MODEL_DIR.is_dir()
if not demo:
    sys.path.insert(0, "tests")
    from tiny_models import write_tiny_models

    write_tiny_models(work / "models")
model = NAME if demo else "tiny-sd15-inpaint"
prompt = "a large red circle, sky and grass background" if demo else "a small red house with a white door"
(work / "job.json").write_text(json.dumps({
    "scenario": "screenshot_pose", "quit": False, "output": str(work / "posed.json"),
    "pykrita": str(pykrita), "workdir": str(work), "model": model, "prompt": prompt, "steps": 12,
}))
print(model)
EOF
)

# 2. The server.
mkdir -p "$WORK/models" "$WORK/outputs"
HF_HUB_OFFLINE=1 python -m server serve --models "$WORK/models" --port "$PORT" --outputs "$WORK/outputs" \
    >"$WORK/server.log" 2>&1 &
PIDS+=($!)

# 3. A private display and Krita in a clean environment.
# Taller than the tests' screen, so the docker (at the right column's default width) shows down to its results.
Xvfb ":$DISPLAY_NUMBER" -screen 0 1600x1200x24 -nolisten tcp >/dev/null 2>&1 &
PIDS+=($!)
mkdir -m 700 "$WORK/runtime"
env -i HOME="$WORK" PATH=/usr/bin:/bin XDG_DATA_HOME="$WORK/data" XDG_CONFIG_HOME="$WORK/config" \
    XDG_RUNTIME_DIR="$WORK/runtime" PYTHONPATH="$REPO/tests/krita" DISPLAY=":$DISPLAY_NUMBER" \
    UNDERPAINT_KRITA_JOB="$WORK/job.json" krita --nosplash "$WORK/start.png" >"$WORK/krita.log" 2>&1 &
PIDS+=($!)

# 4. Wait for the posed scene (the driver writes its findings when the result is shown), then shoot.
for _ in $(seq 600); do
    [ -s "$WORK/posed.json" ] && break
    sleep 0.5
done
if [ ! -s "$WORK/posed.json" ]; then
    echo "Krita did not pose the scene; its log:" >&2
    tail -20 "$WORK/krita.log" >&2
    exit 1
fi
if grep -q '"error"' "$WORK/posed.json"; then
    cat "$WORK/posed.json" >&2
    exit 1
fi
sleep 2
mkdir -p "$(dirname "$OUTPUT")"
DISPLAY=":$DISPLAY_NUMBER" import -window root "$OUTPUT"
echo "model $MODEL; screenshot in $OUTPUT"
