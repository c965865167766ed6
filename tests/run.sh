#!/bin/sh
# Sets up .venv and runs every check: ruff, mypy, then the whole pytest suite.
# Usage: ./tests/run.sh [pytest args]
set -eu
cd "$(dirname "$0")/.."

python3 installers/bootstrap.py --dev

# The preview page is tested in a real headless browser. Install it where we may (CI runs as
# root on Debian); elsewhere that one test skips and says how to install it.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium and chromium-driver for the browser test"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: chromium/chromedriver missing; the browser test will be skipped" \
             "(sudo apt-get install chromium chromium-driver)"
    fi
fi

echo "== ruff"
.venv/bin/python -m ruff check .

echo "== mypy"
# mypy maps files to modules by path, and our folders (daemon/, models/, tray/) are installed
# as faceswap_cam.*: check them through a tree of links that has the import names.
mkdir -p build/typecheck/faceswap_cam
for pkg in daemon tray models; do
    ln -sfn "../../../$pkg" "build/typecheck/faceswap_cam/$pkg"
done
.venv/bin/python -m mypy build/typecheck/faceswap_cam tests benchmarks

echo "== pytest"
.venv/bin/python -m pytest "$@"
