# shellcheck shell=sh
# What install-linux.sh and install-macos.sh share: the venv, the pip install and its stamp, the
# ~/.local/bin link, the service, the uninstall manifest, --dry-run and the messages.
#
# Not run on its own: each installer sources it (after `set -eu`), then calls use_data_dir, and
# defines the platform's parts that the functions below call:
#   SCRIPT_DIR         the installer's folder, absolute (set before sourcing this file)
#   usage              the --help text (usage_head and usage_tail print the shared lines)
#   platform_option    handles a flag of the platform's own (exit status 1: not one of them)
#   install, uninstall the two modes, built from the steps below
# and ends with: main "$@"
#
# POSIX sh, like the installers: it runs before anything is installed.

APP=faceswap-cam
BIN_DIR=$HOME/.local/bin
LINK=$BIN_DIR/$APP

SOURCE=
MODELS=1
SERVICE=1
UNINSTALL=0
PURGE=0
DRY_RUN=0
FORCE=0
PYTHON=
CHANGES=0

# The app's data folder, and what lives in it.
use_data_dir() {
    DATA_DIR=$1
    VENV=$DATA_DIR/venv
    ENTRY=$VENV/bin/$APP
    # What the last pip install was given; equal on a re-run means pip has nothing to do.
    STAMP=$VENV/.faceswap-cam-installer
    # Folders (and, on Linux, packages) this installer created, so --uninstall removes those
    # and nothing else.
    MANIFEST=$DATA_DIR/.installer-manifest
}

usage_head() { # script name
    cat <<EOF
Usage: $1 [options]

Installs FaceSwap Cam for this user:
  venv     $VENV
  command  $LINK

Options:
  --source PATH_OR_SPEC   what to pip install (default: the checkout this script is in);
                          a folder, a wheel/sdist, a requirement or a URL
  --no-models             skip the model extra (torch, diffusers...): passthrough only
EOF
}

usage_tail() {
    cat <<EOF
  --no-service            do not install (or, with --uninstall, remove) the background service
  --force                 reinstall the package even if it is up to date
  --uninstall             remove what this installer added; keeps reference faces and models
  --purge                 with --uninstall: also delete references, models, settings, caches
  --dry-run               print each action instead of doing it
  -h, --help              this help
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
            cd -- "$1" || exit
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

# Sets PYTHON: the one given with --python (dies if it will not do), else the first of the
# candidates that is a Python 3.11+. Exit status 1 when none is; the caller says what to install.
find_python() { # candidate...
    if [ -n "$PYTHON" ]; then
        python_ok "$PYTHON" || die "$PYTHON is not a working Python 3.11 or newer"
        return 0
    fi
    for fp_candidate in "$@"; do
        if command -v "$fp_candidate" >/dev/null 2>&1 && python_ok "$fp_candidate"; then
            PYTHON=$(command -v "$fp_candidate")
            return 0
        fi
    done
    return 1
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
                if ! platform_option "$1"; then
                    usage >&2
                    die "unknown option: $1"
                fi
                ;;
        esac
        shift
    done
    [ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"
}

# The first lines of either mode.
header() {
    say "$1"
    [ "$DRY_RUN" = 0 ] || say "dry run: printing actions, changing nothing"
}

main() {
    parse_args "$@"
    if [ "$UNINSTALL" = 1 ]; then
        uninstall
    else
        install
    fi
}

# ---------------------------------------------------------------------------- install steps

# Sets REQUIREMENT (what pip gets) and SOURCE_ID (what the stamp remembers).
resolve_source() {
    if [ -z "$SOURCE" ]; then
        rs_repo=$(dirname -- "$SCRIPT_DIR")
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

ensure_venv() { # hint for when the venv cannot be created ('' for none)
    if [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python"; then
        ok "virtual environment $VENV"
        return 0
    fi
    make_dirs "$DATA_DIR"
    if [ -e "$VENV" ]; then
        # Typically its base Python went away (a system upgrade, or Homebrew removed or
        # upgraded it): rebuild it in place.
        say "the virtual environment in $VENV is broken; rebuilding it"
        run "$PYTHON" -m venv --clear "$VENV" || die "could not rebuild $VENV"
    else
        run "$PYTHON" -m venv "$VENV" || die "could not create $VENV${1:+ ($1)}"
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

ensure_link() { # the shell start-up file to add ~/.local/bin to PATH in, under ~
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
        *) note "$BIN_DIR is not on your PATH; add it (e.g. in ~/$1):" \
            "export PATH=\"\$HOME/.local/bin:\$PATH\"" ;;
    esac
}

# The venv, the package in it and the command: the steps after find_python.
install_app() { # venv hint (see ensure_venv), start-up file (see ensure_link)
    resolve_source
    ensure_venv "$1"
    ensure_package
    ensure_link "$2"
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
        # The command itself leaves an identical unit/agent alone, so running it again is
        # harmless.
        run "$ENTRY" service install || warn "faceswap-cam service install failed; see above"
    else
        note "this version has no 'service' command; start the daemon with: faceswap-cam run"
    fi
}

# The service, then the summary and the next steps: the end of an install.
finish_install() {
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

# Reads the manifest into MANIFEST_TEXT, then removes the service, our link and the venv. The
# manifest file itself is the caller's to remove (or to rewrite, with what a later run needs).
remove_app() {
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
}

# The app's folders (with --purge; else a note on what is kept), the empty folders the install
# created, and the summary.
finish_uninstall() { # the app's folders, all deleted by --purge
    if [ "$PURGE" = 1 ]; then
        for un_dir in "$@"; do
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
}
