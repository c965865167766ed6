#!/bin/sh
# Sets up .venv and runs every check: ruff, mypy, then the whole pytest suite.
# Usage: ./tests/run.sh [pytest args]
set -eu
cd "$(dirname "$0")/.."

python3 installers/bootstrap.py --dev

# Some tests need system tools: the preview page a real headless browser, the tray a virtual X
# display, the installers shellcheck, the autostart entry desktop-file-validate, FaceSwap Mic a
# sound server (a headless PulseAudio the tests start themselves). Each of those
# tests skips without its tool, so install them where we may (CI runs as root on Debian), with
# one `apt-get update` for all; elsewhere say what is missing and how to install it.
packages=""
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || packages="$packages $2"
}
need chromium chromium
need chromedriver chromium-driver
need Xvfb xvfb
need shellcheck shellcheck
need desktop-file-validate desktop-file-utils
need pulseaudio pulseaudio
if [ -n "$packages" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing$packages for the tests that need them"
        apt-get update -qq >/dev/null
        # $packages is split on purpose: one word per package.
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
    else
        echo "note:$packages missing; the tests that need them will be skipped" \
             "(sudo apt-get install$packages)"
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
# The suite writes ~1 GB under the temporary folder (an installer test builds a second virtual
# environment there); a full disk fails it halfway with "No space left on device", so say it
# first.
tmp="${TMPDIR:-/tmp}"
free_mb=$(df -Pk "$tmp" 2>/dev/null | awk 'NR == 2 { print int($4 / 1024) }') || free_mb=""
if [ -n "$free_mb" ] && [ "$free_mb" -lt 2048 ]; then
    echo "warning: only ${free_mb} MB free in $tmp; the tests need about 2 GB there" >&2
fi
.venv/bin/python -m pytest "$@"
