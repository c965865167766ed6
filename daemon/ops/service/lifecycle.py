"""What ``faceswap-cam service`` does: install, uninstall, status and logs, on whichever
platform's backend applies."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from faceswap_cam.daemon.ops.service.common import (
    LINUX,
    LOG_LINES,
    MACOS,
    WINDOWS,
    Backend,
    Commands,
    Context,
    Outcome,
    Runner,
    ServiceError,
    Status,
    make_context,
    make_dirs,
    manifest_bytes,
    prune_dirs,
    read_manifest,
    remove_file,
    write_file,
)
from faceswap_cam.daemon.ops.service.linux import LinuxBackend
from faceswap_cam.daemon.ops.service.macos import MacOSBackend
from faceswap_cam.daemon.ops.service.windows import WindowsBackend


def backend_for(ctx: Context) -> Backend:
    if ctx.platform == LINUX:
        return LinuxBackend(ctx)
    if ctx.platform == MACOS:
        return MacOSBackend(ctx)
    return WindowsBackend(ctx)


def install(*, platform: str | None = None, home: Path | None = None,
            env: Mapping[str, str] | None = None, python: str | None = None,
            runner: Runner | None = None) -> Outcome:
    """Write the login-service files (only those whose content changed) and tell the service
    manager. ``home`` given without ``env`` means an empty environment (see make_context)."""
    ctx = make_context(platform, home, env, python, runner)
    backend = backend_for(ctx)
    manifest_path = backend.manifest()
    manifest = read_manifest(manifest_path)
    created = [Path(p) for p in manifest.get("created_dirs", [])]
    was_installed = backend.primary().exists()
    files = backend.files()
    for folder in (*backend.extra_dirs(), *(f.path.parent for f in files), manifest_path.parent):
        make_dirs(folder, created)

    def record() -> bool:
        extras = [p for p in backend.extra_paths() if p.exists()]
        return write_file(manifest_path, manifest_bytes([f.path for f in files] + extras, created))

    # The manifest goes first: if install dies half way, uninstall still knows the folders.
    manifest_written = record()
    written = [item.path for item in files if write_file(item.path, item.content)]

    commands = Commands(ctx.runner, ctx.platform == WINDOWS)
    activation = backend.activate(commands, changed=bool(written), was_installed=was_installed)
    written += activation.written
    created += activation.created_dirs
    if record() or manifest_written:
        written.append(manifest_path)

    if not written and not activation.removed:
        action = "unchanged"
    else:
        action = "updated" if was_installed else "installed"
    return Outcome(action, ctx.platform, tuple(written), tuple(activation.removed),
                   tuple(commands.ran), tuple(activation.notes), tuple(activation.warnings))


def uninstall(*, platform: str | None = None, home: Path | None = None,
              env: Mapping[str, str] | None = None, runner: Runner | None = None) -> Outcome:
    """Stop the daemon, then remove every file install wrote and the folders it created. Running
    it again, or without an install, is fine ("absent")."""
    ctx = make_context(platform, home, env, None, runner)
    backend = backend_for(ctx)
    manifest_path = backend.manifest()
    manifest = read_manifest(manifest_path)
    # Paths only, no contents: uninstall must work even where install could not generate them.
    ours = set(backend.paths()) | set(backend.extra_paths())
    ours |= {Path(p) for p in manifest.get("files", [])}
    present = sorted(p for p in ours if p.exists() or p.is_symlink())
    commands = Commands(ctx.runner, ctx.platform == WINDOWS)
    warnings: list[str] = []
    if present:
        warnings = backend.deactivate(commands)
    removed = [p for p in present if remove_file(p)]
    removed += backend.cleanup(commands, manager_ok=bool(present) and not warnings)
    if remove_file(manifest_path):
        removed.append(manifest_path)
    removed += prune_dirs([Path(p) for p in manifest.get("created_dirs", [])])
    notes = []
    kept = [p for p in backend.log_files() if p.exists()]
    if kept:
        notes.append("logs kept: " + ", ".join(str(p) for p in kept))
    return Outcome("removed" if removed else "absent", ctx.platform, (), tuple(removed),
                   tuple(commands.ran), tuple(notes), tuple(warnings))


def status(*, platform: str | None = None, home: Path | None = None,
           env: Mapping[str, str] | None = None, python: str | None = None,
           runner: Runner | None = None) -> Status:
    """What is installed, whether it is what install would write now, and what the service
    manager says about it."""
    ctx = make_context(platform, home, env, python, runner)
    backend = backend_for(ctx)
    files = []
    for item in backend.files():
        try:
            state = "ok" if item.path.read_bytes() == item.content else "outdated"
        except FileNotFoundError:
            state = "missing"
        files.append((item.path, state))
    notes = backend.notes()
    if any(state == "outdated" for _, state in files):
        notes.insert(0, "some files differ from what this Python would install (moved venv? "
                     "newer version?): run `faceswap-cam service install` again")
    installed = backend.primary().exists()
    manager = backend.manager_status() if installed else []
    return Status(ctx.platform, installed, tuple(files), tuple(manager), tuple(notes))


def logs(*, platform: str | None = None, home: Path | None = None,
         env: Mapping[str, str] | None = None, runner: Runner | None = None,
         lines: int = LOG_LINES) -> str:
    """The service's recent log: the user journal (Linux), the log files (macOS), the log files
    and where Task Scheduler's history is (Windows)."""
    ctx = make_context(platform, home, env, None, runner)
    return backend_for(ctx).logs(lines)


def is_installed(*, platform: str | None = None, home: Path | None = None,
                 env: Mapping[str, str] | None = None) -> bool:
    """Whether the daemon's login file exists: one stat, cheap enough for the tray's poll."""
    try:
        ctx = make_context(platform, home, env, None, None)
    except ServiceError:
        return False
    return backend_for(ctx).primary().exists()
