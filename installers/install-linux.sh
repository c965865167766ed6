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

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
[ -r "$SCRIPT_DIR/lib/common.sh" ] ||
    { printf 'error: %s is missing\n' "$SCRIPT_DIR/lib/common.sh" >&2; exit 1; }
# shellcheck source=lib/common.sh disable=SC1091 # followed with shellcheck -x
. "$SCRIPT_DIR/lib/common.sh"

# Debian keeps modprobe/modinfo in /sbin, which is not on a normal user's PATH.
PATH=$PATH:/usr/sbin:/sbin
export PATH

use_data_dir "${XDG_DATA_HOME:-$HOME/.local/share}/$APP"
CONFIG_DIR=${XDG_CONFIG_HOME:-$HOME/.config}/$APP
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/$APP
STATE_DIR=${XDG_STATE_HOME:-$HOME/.local/state}/$APP

MODPROBE_CONF=/etc/modprobe.d/$APP.conf
MODULES_LOAD_CONF=/etc/modules-load.d/$APP.conf
CARD_LABEL="FaceSwap Cam"
MODPROBE_LINE="options v4l2loopback devices=1 card_label=\"$CARD_LABEL\" exclusive_caps=1"
MODULES_LOAD_LINE=v4l2loopback
CTL_HINT="sudo v4l2loopback-ctl add -n \"$CARD_LABEL\" --exclusive-caps=1"

V4L2=ask

usage() {
    usage_head install-linux.sh
    cat <<EOF
  --python PYTHON         the Python 3.11+ to build the venv from (default: found on PATH)
  --with-v4l2loopback     set up the v4l2loopback virtual camera (needs sudo); with
                          --uninstall, remove its /etc files (and packages we installed)
  --skip-v4l2loopback     leave v4l2loopback alone, without asking
EOF
    usage_tail
    cat <<EOF

Without --with-v4l2loopback or --skip-v4l2loopback it asks (y/N) when run from a terminal,
and skips the system set-up otherwise.
EOF
}

platform_option() {
    case $1 in
        --with-v4l2loopback) V4L2=yes ;;
        --skip-v4l2loopback) V4L2=no ;;
        *) return 1 ;;
    esac
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

# True if the file exists and holds exactly that one line (what we would write).
has_content() {
    [ -f "$1" ] && [ "$(cat -- "$1")" = "$2" ]
}

# ---------------------------------------------------------------------------- v4l2loopback

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

install() {
    header "FaceSwap Cam installer (Linux)"
    if [ -n "${SUDO_USER:-}" ] && [ "$(id -u)" = 0 ]; then
        warn "run through sudo, this installs for root, not for $SUDO_USER; run it as" \
            "yourself: it asks for sudo only for the v4l2loopback steps"
    fi
    find_python python3 python3.13 python3.12 python3.11 ||
        die "FaceSwap Cam needs Python 3.11 or newer with venv (Debian/Ubuntu: sudo apt-get" \
            "install python3 python3-venv; Fedora: sudo dnf install python3), or pass --python"
    install_app "Debian/Ubuntu: sudo apt-get install python3-venv" .profile
    setup_v4l2loopback
    finish_install
}

# ---------------------------------------------------------------------------- uninstall

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
    header "FaceSwap Cam uninstaller (Linux)"
    remove_app
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
    finish_uninstall "$DATA_DIR" "$CONFIG_DIR" "$CACHE_DIR" "$STATE_DIR"
    case ${FACESWAP_CAM_MODELS_DIR:-}${FACESWAP_CAM_REFERENCES_DIR:-} in
        ?*) note "folders set through FACESWAP_CAM_MODELS_DIR/FACESWAP_CAM_REFERENCES_DIR are" \
            "never touched" ;;
    esac
}

main "$@"
