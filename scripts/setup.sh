#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine (CPU or GPU): system libraries for headless
# OpenGL, a virtual environment in .venv, torch, then serialgen itself. Idempotent: reruns
# finish in seconds once everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless rendering: EGL + Mesa (llvmpipe on CPU); chromium for the web app's browser test.
# Root installs; otherwise sudo if present.
need=()
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

PYTHON=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.serialgen-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # Pinned: 2.13.0 is the CPU build available offline here; an unpinned torch pulls
    # several GB of CUDA wheels.
    .venv/bin/pip install -q "torch==2.13.0"
    .venv/bin/pip install -q -e ".[serve,eval,test]"
    echo "$want" > "$stamp"
fi
