#!/bin/sh
# FaceSwap Cam installer for Linux (end users; developers use installers/bootstrap.py).
#
# Installs faceswap-cam into its own virtual environment under the user's data folder, links
# ~/.local/bin/faceswap-cam to it, optionally sets up the v4l2loopback virtual camera (with
# consent: it needs root) and registers the background service. Safe to re-run: steps that are
# already done are reported as "ok" and left alone. --uninstall reverses it; run with --help
# for the flags.
#
# POSIX sh on purpose: it must run before anything is installed, on any distribution.
set -eu

# Debian keeps modprobe/modinfo in /sbin, which is not on a normal user's PATH.
PATH=$PATH:/usr/sbin:/sbin
export PATH

APP=faceswap-cam
DATA_DIR=${XDG_DATA_HOME:-$HOME/.local/share}/$APP
CONFIG_DIR=${XDG_CONFIG_HOME:-$HOME/.config}/$APP
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/$APP
STATE_DIR=${XDG_STATE_HOME:-$HOME/.local/state}/$APP
VENV=$DATA_DIR/venv
ENTRY=$VENV/bin/$APP
BIN_DIR=$HOME/.local/bin
LINK=$BIN_DIR/$APP
# What the last pip install was given; equal on a re-run means pip has nothing to do.
STAMP=$VENV/.faceswap-cam-installer
# Folders and packages this installer created, so --uninstall removes those and nothing else.
MANIFEST=$DATA_DIR/.installer-manifest

MODPROBE_CONF=/etc/modprobe.d/$APP.conf
MODULES_LOAD_CONF=/etc/modules-load.d/$APP.conf
CARD_LABEL="FaceSwap Cam"
MODPROBE_LINE="options v4l2loopback devices=1 card_label=\"$CARD_LABEL\" exclusive_caps=1"
MODULES_LOAD_LINE=v4l2loopback
CTL_HINT="sudo v4l2loopback-ctl add -n \"$CARD_LABEL\" --exclusive-caps=1"

SOURCE=
MODELS=1
V4L2=ask
SERVICE=1
UNINSTALL=0
PURGE=0
DRY_RUN=0
FORCE=0
PYTHON=
CHANGES=0

usage() {
    cat <<EOF
Usage: install-linux.sh [options]

Installs FaceSwap Cam for this user:
  venv     $VENV
  command  $LINK

Options:
  --source PATH_OR_SPEC   what to pip install (default: the checkout this script is in);
                          a folder, a wheel/sdist, a requirement or a URL
  --no-models             skip the model extra (torch, diffusers...): passthrough only
  --python PYTHON         the Python 3.11+ to build the venv from (default: found on PATH)
  --with-v4l2loopback     set up the v4l2loopback virtual camera (needs sudo); with
                          --uninstall, remove its /etc files (and packages we installed)
  --skip-v4l2loopback     leave v4l2loopback alone, without asking
  --no-service            do not install (or, with --uninstall, remove) the background service
  --force                 reinstall the package even if it is up to date
  --uninstall             remove what this installer added; keeps reference faces and models
  --purge                 with --uninstall: also delete references, models, settings, caches
  --dry-run               print each action instead of doing it
  -h, --help              this help

Without --with-v4l2loopback or --skip-v4l2loopback it asks (y/N) when run from a terminal,
and skips the system set-up otherwise.
EOF
}

say() { printf '%s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
note() { printf 'note: %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
changed() { CHANGES=$((CHANGES + 1)); }

# Shell-quotes its arguments for display, so a printed command can be pasted back.
quoted() {
    q_out=
    for q_arg in "$@"; do
        case $q_arg in
            '' | *[!A-Za-z0-9_./:=@%+,-]*)
                q_arg="'$(printf '%s' "$q_arg" | sed "s/'/'\\\\''/g")'" ;;
        esac
        q_out="$q_out${q_out:+ }$q_arg"
    done
    printf '%s' "$q_out"
}

# Runs a command, or only prints it in a dry run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        say "would run: $(quoted "$@")"
        return 0
    fi
    say "+ $(quoted "$@")"
    "$@"
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then
        run "$@"
    elif command -v sudo >/dev/null 2>&1 || [ "$DRY_RUN" = 1 ]; then
        run sudo "$@"
    else
        die "this step needs root and sudo is not installed: $(quoted "$@")"
    fi
}

# Asks a y/N question on the terminal. Exit status: 0 yes, 1 no, 2 no terminal to ask on.
ask() {
    [ -t 0 ] || return 2
    printf '%s [y/N] ' "$*"
    read -r ask_answer || ask_answer=
    case $ask_answer in
        [yY] | [yY][eE][sS]) return 0 ;;
        *) return 1 ;;
    esac
}

record() {
    [ "$DRY_RUN" = 1 ] && return 0
    printf '%s\n' "$*" >>"$MANIFEST"
}

# mkdir -p that records each folder it creates, so uninstall can remove exactly those.
make_dirs() {
    md_dir=$1
    md_missing=
    while [ ! -d "$md_dir" ]; do
        md_missing="$md_dir
$md_missing"
        md_dir=$(dirname -- "$md_dir")
    done
    [ -n "$md_missing" ] || return 0
    if [ "$DRY_RUN" = 1 ]; then
        say "would create folder: $1"
        return 0
    fi
    mkdir -p -- "$1"
    printf '%s' "$md_missing" | while IFS= read -r md_line; do
        [ -z "$md_line" ] || record "dir $md_line"
    done
}

# True if the file exists and holds exactly that one line (what we would write).
has_content() {
    [ -f "$1" ] && [ "$(cat -- "$1")" = "$2" ]
}

if command -v sha256sum >/dev/null 2>&1; then
    HASH_CMD=sha256sum
else
    HASH_CMD="shasum -a 256"
fi

hash_stdin() {
    # shellcheck disable=SC2086 # HASH_CMD is a command and its options
    $HASH_CMD | cut -d' ' -f1
}

# A fingerprint of what would be installed: the files of a source folder (build outputs and
# caches aside), the bytes of a wheel/sdist, or the requirement text itself.
source_digest() {
    if [ -d "$1" ]; then
        (
            cd -- "$1"
            # shellcheck disable=SC2086 # HASH_CMD is a command and its options
            find . -type d \( -name '.?*' -o -name build -o -name dist -o -name venv \
                -o -name __pycache__ -o -name '*.egg-info' -o -name node_modules \) -prune \
                -o -type f -print | LC_ALL=C sort | tr '\n' '\0' | xargs -0 $HASH_CMD
        ) | hash_stdin
    elif [ -f "$1" ]; then
        hash_stdin <"$1"
    else
        printf '%s' "$1" | hash_stdin
    fi
}

python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

find_python() {
    if [ -n "$PYTHON" ]; then
        python_ok "$PYTHON" || die "$PYTHON is not a working Python 3.11 or newer"
        return 0
    fi
    for fp_candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$fp_candidate" >/dev/null 2>&1 && python_ok "$fp_candidate"; then
            PYTHON=$(command -v "$fp_candidate")
            return 0
        fi
    done
    die "FaceSwap Cam needs Python 3.11 or newer with venv (Debian/Ubuntu: sudo apt-get" \
        "install python3 python3-venv; Fedora: sudo dnf install python3), or pass --python"
}

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --source)
                [ $# -ge 2 ] || die "--source needs a value"
                SOURCE=$2
                shift
                ;;
            --source=*) SOURCE=${1#--source=} ;;
            --python)
                [ $# -ge 2 ] || die "--python needs a value"
                PYTHON=$2
                shift
                ;;
            --python=*) PYTHON=${1#--python=} ;;
            --no-models) MODELS=0 ;;
            --with-v4l2loopback) V4L2=yes ;;
            --skip-v4l2loopback) V4L2=no ;;
            --no-service) SERVICE=0 ;;
            --force) FORCE=1 ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            --dry-run) DRY_RUN=1 ;;
            -h | --help)
                usage
                exit 0
                ;;
            *)
                usage >&2
                die "unknown option: $1"
                ;;
        esac
        shift
    done
    [ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"
}

# ---------------------------------------------------------------------------- install steps

# Sets REQUIREMENT (what pip gets) and SOURCE_ID (what the stamp remembers).
resolve_source() {
    if [ -z "$SOURCE" ]; then
        rs_here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
        rs_repo=$(dirname -- "$rs_here")
        if ! grep -q '^name = "faceswap-cam"' "$rs_repo/pyproject.toml" 2>/dev/null; then
            die "this script is not inside a faceswap-cam checkout; pass --source PATH_OR_SPEC"
        fi
        SOURCE=$rs_repo
    fi
    if [ "$MODELS" = 1 ]; then
        rs_extras=models,tray
    else
        rs_extras=tray
    fi
    if [ -e "$SOURCE" ]; then
        # An absolute path, so the stamp and pip's view do not depend on the current folder.
        if [ -d "$SOURCE" ]; then
            SOURCE=$(CDPATH='' cd -- "$SOURCE" && pwd)
        else
            SOURCE=$(CDPATH='' cd -- "$(dirname -- "$SOURCE")" && pwd)/$(basename -- "$SOURCE")
        fi
        REQUIREMENT="${SOURCE}[$rs_extras]"
    else
        case $SOURCE in
            *\[*) REQUIREMENT=$SOURCE ;;
            *://*) REQUIREMENT="${APP}[$rs_extras] @ $SOURCE" ;;
            *) REQUIREMENT=$(printf '%s' "$SOURCE" | sed "s/^\([A-Za-z0-9._-]*\)/\1[$rs_extras]/") ;;
        esac
    fi
    SOURCE_ID="requirement=$REQUIREMENT
digest=$(source_digest "$SOURCE")"
}

ensure_venv() {
    if [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python"; then
        ok "virtual environment $VENV"
        return 0
    fi
    make_dirs "$DATA_DIR"
    if [ -e "$VENV" ]; then
        # Typically its base Python went away in a system upgrade: rebuild it in place.
        say "the virtual environment in $VENV is broken; rebuilding it"
        run "$PYTHON" -m venv --clear "$VENV" || die "could not rebuild $VENV"
    else
        run "$PYTHON" -m venv "$VENV" ||
            die "could not create $VENV (Debian/Ubuntu: sudo apt-get install python3-venv)"
    fi
    changed
}

ensure_package() {
    if [ "$FORCE" = 0 ] && [ -x "$ENTRY" ] && [ -f "$STAMP" ] &&
        [ "$(cat -- "$STAMP")" = "$SOURCE_ID" ]; then
        ok "faceswap-cam is up to date in the venv (from $SOURCE; --force reinstalls)"
        return 0
    fi
    if [ "$MODELS" = 1 ]; then
        say "installing $REQUIREMENT (the model stack is several GB: the first run takes a while)"
    else
        say "installing $REQUIREMENT (without the model extra: the daemon runs in passthrough)"
    fi
    run "$VENV/bin/python" -m pip install --disable-pip-version-check "$REQUIREMENT" ||
        die "pip could not install $REQUIREMENT"
    if [ "$DRY_RUN" = 0 ]; then
        printf '%s\n' "$SOURCE_ID" >"$STAMP"
    fi
    changed
}

ensure_link() {
    el_target=
    [ ! -L "$LINK" ] || el_target=$(readlink -- "$LINK")
    case $el_target in
        "$ENTRY")
            ok "$LINK -> $ENTRY"
            ;;
        */$APP/venv/bin/$APP)
            # Ours from an install under another data folder: point it at this one.
            run ln -sfn -- "$ENTRY" "$LINK"
            changed
            ;;
        *)
            if [ -e "$LINK" ] || [ -L "$LINK" ]; then
                warn "$LINK exists and is not our link; leaving it alone (remove it and" \
                    "re-run to link $ENTRY)"
            else
                make_dirs "$BIN_DIR"
                run ln -s -- "$ENTRY" "$LINK"
                changed
            fi
            ;;
    esac
    case ":$PATH:" in
        *":$BIN_DIR:"*) ;;
        *) note "$BIN_DIR is not on your PATH; add it (e.g. in ~/.profile):" \
            "export PATH=\"\$HOME/.local/bin:\$PATH\"" ;;
    esac
}

v4l2_label_present() {
    grep -qx "$CARD_LABEL" /sys/devices/virtual/video4linux/video*/name 2>/dev/null
}

secure_boot_note() {
    note "with Secure Boot on (check: mokutil --sb-state), the kernel only loads signed modules:" \
        "the DKMS-built v4l2loopback must be signed with a key enrolled in MOK (Debian/Ubuntu:" \
        "sudo mokutil --import /var/lib/dkms/mok.pub, then reboot and enrol it), or modprobe" \
        "fails with \"Key was rejected by service\"."
}

# Writes a one-line root-owned file unless it already says exactly that.
write_root_file() {
    if has_content "$1" "$2"; then
        ok "$1 is already set"
        return 0
    fi
    if [ -e "$1" ]; then
        warn "$1 exists with other content (edited by hand?); leaving it. Ours would be: $2"
        return 0
    fi
    if [ "$DRY_RUN" = 1 ]; then
        say "would write $1:"
        say "    $2"
        return 0
    fi
    wr_tmp=$(mktemp)
    printf '%s\n' "$2" >"$wr_tmp"
    chmod 644 "$wr_tmp"
    if as_root mkdir -p "$(dirname -- "$1")" && as_root cp -- "$wr_tmp" "$1"; then
        rm -f -- "$wr_tmp"
    else
        rm -f -- "$wr_tmp"
        die "could not write $1"
    fi
    changed
}

package_installed() { # manager package
    case $1 in
        apt-get) dpkg-query -W -f='${Status}' "$2" 2>/dev/null | grep -q 'install ok installed' ;;
        dnf) rpm -q "$2" >/dev/null 2>&1 ;;
        *) return 1 ;;
    esac
}

install_v4l2_packages() {
    if modinfo v4l2loopback >/dev/null 2>&1; then
        ok "the v4l2loopback kernel module is installed"
        return 0
    fi
    if command -v apt-get >/dev/null 2>&1; then
        ip_manager=apt-get
        ip_wanted="v4l2loopback-dkms v4l2loopback-utils"
        # DKMS builds the module against the running kernel's headers.
        ip_headers=linux-headers-$(uname -r)
        if apt-cache show "$ip_headers" >/dev/null 2>&1; then
            ip_wanted="$ip_wanted $ip_headers"
        fi
    elif command -v dnf >/dev/null 2>&1; then
        ip_manager=dnf
        ip_wanted=v4l2loopback
        note "on Fedora v4l2loopback (and akmod-v4l2loopback) comes from RPM Fusion; enable" \
            "it first if dnf cannot find it: https://rpmfusion.org/Configuration"
    else
        warn "no apt-get or dnf here: install v4l2loopback with your package manager, then" \
            "re-run this script"
        return 0
    fi
    ip_new=
    for ip_package in $ip_wanted; do
        package_installed "$ip_manager" "$ip_package" || ip_new="$ip_new $ip_package"
    done
    if [ "$ip_manager" = apt-get ]; then
        as_root apt-get update || warn "apt-get update failed; trying the install anyway"
    fi
    # shellcheck disable=SC2086 # a list of package names
    as_root "$ip_manager" install -y $ip_wanted || die "could not install $ip_wanted"
    for ip_package in $ip_new; do
        record "package $ip_manager $ip_package"
    done
    changed
}

load_v4l2_module() {
    if [ -d /sys/module/v4l2loopback ]; then
        if v4l2_label_present; then
            ok "v4l2loopback is loaded with a \"$CARD_LABEL\" device"
        else
            note "v4l2loopback is already loaded with other options, so there is no" \
                "\"$CARD_LABEL\" device yet. Ours apply after a reboot, or now with" \
                "sudo modprobe -r v4l2loopback && sudo modprobe v4l2loopback (closes apps" \
                "using it), or add one at run time (v4l2loopback 0.13+): $CTL_HINT"
        fi
        return 0
    fi
    if [ "$DRY_RUN" = 1 ]; then
        as_root modprobe v4l2loopback
        return 0
    fi
    if lv_error=$(as_root modprobe v4l2loopback 2>&1); then
        [ -z "$lv_error" ] || say "$lv_error"
        changed
        return 0
    fi
    say "$lv_error" >&2
    case $lv_error in
        *"Key was rejected"*)
            warn "the kernel refused the v4l2loopback module (Secure Boot): enrol the DKMS" \
                "signing key as the note above says, reboot, then: sudo modprobe v4l2loopback"
            ;;
        *) warn "modprobe v4l2loopback failed; the daemon still runs, with the preview page" \
            "as its output" ;;
    esac
}

v4l2_all_set() {
    has_content "$MODPROBE_CONF" "$MODPROBE_LINE" &&
        has_content "$MODULES_LOAD_CONF" "$MODULES_LOAD_LINE" &&
        [ -d /sys/module/v4l2loopback ] && v4l2_label_present
}

setup_v4l2loopback() {
    say "== v4l2loopback (the \"$CARD_LABEL\" virtual camera device)"
    if v4l2_all_set; then
        ok "v4l2loopback is set up: $MODPROBE_CONF, $MODULES_LOAD_CONF, module loaded"
        return 0
    fi
    case $V4L2 in
        no)
            note "skipping v4l2loopback (--skip-v4l2loopback)"
            return 0
            ;;
        ask)
            if ask "Set up the v4l2loopback virtual camera now? It installs a kernel module" \
                "package and writes two files under /etc (needs sudo)."; then
                sv_answer=0
            else
                sv_answer=$?
            fi
            case $sv_answer in
                0) ;;
                1)
                    note "skipped v4l2loopback; re-run with --with-v4l2loopback to set it up"
                    return 0
                    ;;
                *)
                    note "skipped v4l2loopback (no terminal to ask on); re-run with" \
                        "--with-v4l2loopback to set it up, or add a device at run time: $CTL_HINT"
                    return 0
                    ;;
            esac
            ;;
    esac
    secure_boot_note
    install_v4l2_packages
    write_root_file "$MODPROBE_CONF" "$MODPROBE_LINE"
    write_root_file "$MODULES_LOAD_CONF" "$MODULES_LOAD_LINE"
    load_v4l2_module
    note "to add a device at run time instead (v4l2loopback 0.13+): $CTL_HINT"
}

has_service_command() {
    [ -x "$ENTRY" ] && "$ENTRY" service --help >/dev/null 2>&1
}

install_service() {
    if [ "$SERVICE" = 0 ]; then
        note "not installing the background service (--no-service)"
    elif [ "$DRY_RUN" = 1 ] && [ ! -x "$ENTRY" ]; then
        say "would run: $(quoted "$ENTRY" service install) (if this version has it)"
    elif has_service_command; then
        # The command itself leaves an identical unit alone, so running it again is harmless.
        run "$ENTRY" service install || warn "faceswap-cam service install failed; see above"
    else
        note "this version has no 'service' command; start the daemon with: faceswap-cam run"
    fi
}

install() {
    say "FaceSwap Cam installer (Linux)"
    [ "$DRY_RUN" = 0 ] || say "dry run: printing actions, changing nothing"
    if [ -n "${SUDO_USER:-}" ] && [ "$(id -u)" = 0 ]; then
        warn "run through sudo, this installs for root, not for $SUDO_USER; run it as" \
            "yourself: it asks for sudo only for the v4l2loopback steps"
    fi
    find_python
    resolve_source
    ensure_venv
    ensure_package
    ensure_link
    setup_v4l2loopback
    install_service
    say ""
    if [ "$DRY_RUN" = 1 ]; then
        say "Dry run finished: nothing was changed."
    elif [ "$CHANGES" = 0 ]; then
        say "Nothing to change: FaceSwap Cam is installed and up to date."
    else
        say "Done ($CHANGES change(s))."
    fi
    say "Next steps:"
    say "  faceswap-cam doctor            check the camera, the virtual camera and the GPU"
    if [ "$MODELS" = 1 ]; then
        say "  faceswap-cam models download   fetch the Wan2.2-Animate weights (large; resumable)"
    else
        say "  (the model extra was skipped: re-run without --no-models for face swapping)"
    fi
    say "  faceswap-cam run               start the daemon by hand"
}

# ---------------------------------------------------------------------------- uninstall

remove_path() {
    if [ -e "$1" ] || [ -L "$1" ]; then
        run rm -rf -- "$1"
        changed
    fi
}

uninstall_v4l2() {
    uv_files=
    if has_content "$MODPROBE_CONF" "$MODPROBE_LINE"; then
        uv_files=" $MODPROBE_CONF"
    elif [ -e "$MODPROBE_CONF" ]; then
        note "$MODPROBE_CONF is not as we wrote it (edited by hand?); leaving it"
    fi
    if has_content "$MODULES_LOAD_CONF" "$MODULES_LOAD_LINE"; then
        uv_files="$uv_files $MODULES_LOAD_CONF"
    elif [ -e "$MODULES_LOAD_CONF" ]; then
        note "$MODULES_LOAD_CONF is not as we wrote it (edited by hand?); leaving it"
    fi
    uv_packages=$(printf '%s\n' "$MANIFEST_TEXT" | sed -n 's/^package //p')
    [ -n "$uv_files$uv_packages" ] || return 0
    uv_what="remove$uv_files"
    if [ -n "$uv_packages" ]; then
        uv_names=$(printf '%s\n' "$uv_packages" | cut -d' ' -f2 | tr '\n' ' ')
        uv_what="$uv_what and the packages we installed: ${uv_names% }"
    fi
    uv_consent=$V4L2
    if [ "$V4L2" = ask ]; then
        if ask "Also $uv_what (needs sudo)?"; then uv_consent=yes; else uv_consent=no; fi
    fi
    if [ "$uv_consent" = no ]; then
        note "keeping the v4l2loopback set-up; to $uv_what, re-run with" \
            "--uninstall --with-v4l2loopback"
        # Without this record a later run could not tell our packages from the user's.
        KEPT_PACKAGES=$uv_packages
        return 0
    fi
    for uv_file in $uv_files; do
        as_root rm -f -- "$uv_file"
        changed
    done
    printf '%s\n' "$uv_packages" | while read -r uv_manager uv_package; do
        [ -n "$uv_package" ] || continue
        as_root "$uv_manager" remove -y "$uv_package" || warn "could not remove $uv_package"
    done
    note "a loaded v4l2loopback module stays until reboot (or: sudo modprobe -r v4l2loopback)"
}

uninstall() {
    say "FaceSwap Cam uninstaller (Linux)"
    [ "$DRY_RUN" = 0 ] || say "dry run: printing actions, changing nothing"
    MANIFEST_TEXT=$(cat -- "$MANIFEST" 2>/dev/null || true)

    # The service is removed by the command that installed it, which lives in the venv.
    if [ "$SERVICE" = 1 ] && has_service_command; then
        run "$ENTRY" service uninstall || warn "faceswap-cam service uninstall failed; see above"
    fi
    if [ -L "$LINK" ] && [ "$(readlink -- "$LINK")" = "$ENTRY" ]; then
        remove_path "$LINK"
    elif [ -e "$LINK" ] || [ -L "$LINK" ]; then
        note "$LINK does not point to $ENTRY; leaving it"
    fi
    remove_path "$VENV"
    KEPT_PACKAGES=
    uninstall_v4l2
    if [ -z "$KEPT_PACKAGES" ]; then
        remove_path "$MANIFEST"
    elif [ "$DRY_RUN" = 0 ]; then
        # Keep what the later --uninstall --with-v4l2loopback needs: our packages, and the
        # folders to tidy once they are empty.
        {
            printf '%s\n' "$KEPT_PACKAGES" | sed 's/^/package /'
            printf '%s\n' "$MANIFEST_TEXT" | grep '^dir ' || true
        } >"$MANIFEST"
    fi

    if [ "$PURGE" = 1 ]; then
        for un_dir in "$DATA_DIR" "$CONFIG_DIR" "$CACHE_DIR" "$STATE_DIR"; do
            remove_path "$un_dir"
        done
    else
        for un_dir in "$DATA_DIR/references" "$DATA_DIR/models"; do
            [ ! -e "$un_dir" ] || note "keeping $un_dir (--purge deletes it)"
        done
    fi
    # Folders we created, deepest first, if nothing else lives in them now.
    printf '%s\n' "$MANIFEST_TEXT" | sed -n 's/^dir //p' |
        awk '{ line[NR] = $0 } END { for (i = NR; i > 0; i--) print line[i] }' |
        while IFS= read -r un_created; do
            if [ "$DRY_RUN" = 1 ]; then
                say "would remove $un_created if empty"
            elif [ -d "$un_created" ]; then
                if rmdir -- "$un_created" 2>/dev/null; then
                    say "removed empty folder $un_created"
                fi
            fi
        done
    say ""
    if [ "$DRY_RUN" = 1 ]; then
        say "Dry run finished: nothing was changed."
    elif [ "$CHANGES" = 0 ]; then
        say "Nothing to remove: FaceSwap Cam is not installed here."
    else
        say "FaceSwap Cam is uninstalled."
    fi
    [ "$PURGE" = 1 ] || say "Reference faces and models are kept; --uninstall --purge deletes them."
    case ${FACESWAP_CAM_MODELS_DIR:-}${FACESWAP_CAM_REFERENCES_DIR:-} in
        ?*) note "folders set through FACESWAP_CAM_MODELS_DIR/FACESWAP_CAM_REFERENCES_DIR are" \
            "never touched" ;;
    esac
}

main() {
    parse_args "$@"
    if [ "$UNINSTALL" = 1 ]; then
        uninstall
    else
        install
    fi
}

main "$@"
