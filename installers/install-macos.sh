#!/bin/sh
# FaceSwap Cam installer for macOS (end users; developers use installers/bootstrap.py).
#
# Installs faceswap-cam into its own virtual environment under
# ~/Library/Application Support/faceswap-cam, links ~/.local/bin/faceswap-cam to it and
# registers the background service. The virtual camera on macOS is OBS's ("OBS Virtual
# Camera"): this script checks for OBS and explains the one-time steps, and the camera
# permission prompt. Safe to re-run: steps already done are reported as "ok" and left alone.
# --uninstall reverses it; run with --help for the flags.
#
# POSIX sh on purpose: it must run before anything is installed (macOS runs it with bash 3.2
# or zsh's sh emulation, neither of which has the newer bash features).
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
[ -r "$SCRIPT_DIR/lib/common.sh" ] ||
    { printf 'error: %s is missing\n' "$SCRIPT_DIR/lib/common.sh" >&2; exit 1; }
# shellcheck source=lib/common.sh disable=SC1091 # followed with shellcheck -x
. "$SCRIPT_DIR/lib/common.sh"

# The same folders platformdirs gives the app on macOS, so --purge finds its data.
use_data_dir "$HOME/Library/Application Support/$APP"
CACHE_DIR=$HOME/Library/Caches/$APP
LOGS_DIR=$HOME/Library/Logs/$APP

usage() {
    usage_head install-macos.sh
    cat <<EOF
  --python PYTHON         the Python 3.11+ to build the venv from (default: found on PATH,
                          Homebrew or python.org)
EOF
    usage_tail
}

# macOS has no flags of its own.
platform_option() { return 1; }

virtual_camera_notes() {
    say "== virtual camera"
    if [ -d /Applications/OBS.app ] || [ -d "$HOME/Applications/OBS.app" ]; then
        ok "OBS is installed"
    else
        note "macOS has no v4l2loopback: FaceSwap Cam publishes through OBS's virtual camera." \
            "Install OBS 30 or newer (brew install --cask obs, or https://obsproject.com)."
    fi
    note "apps list the camera as \"OBS Virtual Camera\" (not \"FaceSwap Cam\"). Open OBS once," \
        "click Start Virtual Camera and approve the camera extension when macOS asks" \
        "(System Settings > General > Login Items & Extensions), then quit OBS: FaceSwap Cam" \
        "drives the camera without OBS running."
    say "== camera permission"
    note "the first time the daemon opens the webcam, macOS asks for camera access. Allow the" \
        "app that runs it: Terminal (or iTerm) for faceswap-cam run, Python for the service." \
        "Missed or denied it? System Settings > Privacy & Security > Camera: switch it on there" \
        "(tccutil reset Camera asks again)."
}

install() {
    header "FaceSwap Cam installer (macOS)"
    [ "$(uname -s)" = Darwin ] || warn "this is the macOS installer; on Linux use install-linux.sh"
    # The python3 that ships with the Command Line Tools is 3.9, too old: look for a newer one
    # from Homebrew or the python.org installer too.
    find_python python3 python3.13 python3.12 python3.11 \
        /opt/homebrew/bin/python3 /usr/local/bin/python3 \
        /Library/Frameworks/Python.framework/Versions/Current/bin/python3 ||
        die "FaceSwap Cam needs Python 3.11 or newer (brew install python@3.12, or the installer" \
            "from https://www.python.org/downloads/macos/), or pass --python"
    install_app "" .zprofile
    virtual_camera_notes
    finish_install
}

uninstall() {
    header "FaceSwap Cam uninstaller (macOS)"
    remove_app
    remove_path "$MANIFEST"
    finish_uninstall "$DATA_DIR" "$CACHE_DIR" "$LOGS_DIR"
    note "OBS and the camera permission are yours to keep or remove (System Settings)."
}

main "$@"
