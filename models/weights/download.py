"""Fetching model weights from the Hugging Face Hub.

``download`` is the only function that touches the network, and only the ``faceswap-cam
models download`` command calls it: nothing is fetched behind the user's back at run time.
huggingface_hub is imported only inside the functions that talk to the Hub, so importing
this stays cheap.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from faceswap_cam.daemon.paths import MODELS_DIR_ENV
from faceswap_cam.models import defaults
from faceswap_cam.models.weights.registry import (
    ModelSpec,
    WeightsError,
    fix_command,
    get_model,
    matches_patterns,
    model_dir,
)
from faceswap_cam.models.weights.verify import FileRecord, Manifest, verify, write_manifest

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- download


class HubApi(Protocol):
    """The two calls ``download`` makes; ``huggingface_hub.HfApi`` satisfies it, tests pass
    a fake."""

    def model_info(self, repo_id: str, *, revision: str | None = ...,
                   files_metadata: bool = ...) -> Any: ...

    def snapshot_download(self, repo_id: str, *, revision: str | None = ...,
                          local_dir: str | Path | None = ...,
                          allow_patterns: list[str] | str | None = ...) -> Any: ...


def _default_api() -> HubApi:
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise WeightsError("huggingface_hub is not installed; install the model extras: "
                           f"{defaults.MODELS_EXTRA_INSTALL}") from exc
    return HfApi()


def _attr(obj: Any, name: str) -> Any:
    # Older huggingface_hub releases give lfs info as a dict, newer ones as an object.
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _records_from_info(info: Any, spec: ModelSpec) -> dict[str, FileRecord]:
    siblings = _attr(info, "siblings")
    if siblings is None:
        raise WeightsError(f"the Hub gave no file list for {spec.repo_id}")
    records = {}
    for sibling in siblings:
        path = _attr(sibling, "rfilename")
        if not isinstance(path, str) or not matches_patterns(path, spec.allow_patterns):
            continue
        lfs = _attr(sibling, "lfs")
        size = _attr(lfs, "size") if lfs is not None else None
        if size is None:
            size = _attr(sibling, "size")
        sha256 = _attr(lfs, "sha256") if lfs is not None else None
        # For an LFS file the blob id hashes the pointer, not the content: useless to verify.
        git_sha1 = None if lfs is not None else _attr(sibling, "blob_id")
        records[path] = FileRecord(path, size if isinstance(size, int) else None,
                                   sha256 or None, git_sha1 or None)
    return records


_NETWORK_ERROR_NAMES = frozenset({
    "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError",
    "TransportError", "ProxyError", "ConnectionError", "OfflineModeIsEnabled",
    "LocalEntryNotFoundError", "MaxRetryError", "NewConnectionError",
})
# EDQUOT does not exist on Windows.
_DISK_ERRNOS = frozenset(getattr(errno, name) for name in
                         ("ENOSPC", "EACCES", "EROFS", "EPERM", "EDQUOT") if hasattr(errno, name))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_network_error(exc: BaseException) -> bool:
    # Matched by class name so requests-, httpx- and httpx2-based hub releases all count,
    # without importing any of them.
    for err in _chain(exc):
        if isinstance(err, ConnectionError | TimeoutError | socket.gaierror):
            return True
        if any(cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(err).__mro__):
            return True
    return False


def _is_disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS


def _clause(exc: BaseException) -> str:
    # Library messages often end with a full stop; ours append another sentence.
    return str(exc).strip().rstrip(".") or type(exc).__name__


def _hub_error_message(exc: Exception, spec: ModelSpec) -> str | None:
    """A user-facing message for errors the Hub itself reports, or None if it is not one."""
    try:
        from huggingface_hub import errors as hub_errors
    except ImportError:
        return None
    repo = spec.repo_id
    if isinstance(exc, hub_errors.GatedRepoError):
        return (f"{repo} is gated: accept its terms at https://huggingface.co/{repo} and log "
                "in with `hf auth login`")
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return f"revision {spec.revision!r} of {repo} does not exist on the Hub"
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return (f"{repo} was not found on the Hub (if it is private, log in with "
                "`hf auth login`)")
    if isinstance(exc, hub_errors.HfHubHTTPError):
        return f"the Hub answered with an error: {_clause(exc)}"
    return None


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    if enabled:
        yield
        return
    from huggingface_hub.utils.tqdm import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def download(name: str, *, progress: bool = True, api: HubApi | None = None) -> Path:
    """Fetch (or finish fetching) a model into ``models_dir()/<name>`` and record its manifest.

    Resumable: files already complete are kept, partial ones continue. Raises WeightsError
    with a message for the user; when it fails before the transfer starts (no network, Hub
    error, not enough disk), nothing on disk was changed.
    """
    spec = get_model(name)
    target = model_dir(spec.name)
    hub = api if api is not None else _default_api()

    # Ask the Hub first: a failure here leaves the disk untouched, and the answer is both the
    # manifest and the commit we pin the transfer to, so the files match what we record.
    logger.info("asking the Hub for %s file list", spec.repo_id)
    try:
        info = hub.model_info(spec.repo_id, revision=spec.revision, files_metadata=True)
    except Exception as exc:
        known = _hub_error_message(exc, spec)
        if known is None and not (_is_network_error(exc) or isinstance(exc, OSError)):
            raise
        reason = known or f"cannot reach the Hugging Face Hub (no network?): {_clause(exc)}"
        raise WeightsError(f"{spec.name}: {reason}. Nothing was changed.") from exc
    records = _records_from_info(info, spec)
    if not records:
        raise WeightsError(f"{spec.name}: no file of {spec.repo_id} matches the expected "
                           f"patterns {list(spec.allow_patterns)}; the repo layout changed. "
                           "Nothing was changed.")
    commit = _attr(info, "sha")
    manifest = Manifest(
        name=spec.name, repo_id=spec.repo_id, revision=spec.revision,
        commit=commit if isinstance(commit, str) else None,
        allow_patterns=spec.allow_patterns, files=records,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )

    # A wrong-size file at its final path is damage (partial downloads live under .cache/),
    # and the hub client may keep it if its timestamps look current: delete it up front.
    damaged, have = [], 0
    for rel, record in records.items():
        try:
            size = (target / rel).stat().st_size
        except FileNotFoundError:
            continue
        if record.size is None or size == record.size:
            have += size
        else:
            damaged.append(target / rel)
    needed = manifest.total_size - have
    free = shutil.disk_usage(_existing_ancestor(target)).free
    if needed > free:
        raise WeightsError(
            f"{spec.name}: needs {human_size(needed)} more disk space in {target}, only "
            f"{human_size(free)} free. Free some space or set {MODELS_DIR_ENV} to a folder on "
            "another disk. Nothing was changed.")

    try:
        target.mkdir(parents=True, exist_ok=True)
        for path in damaged:
            logger.warning("%s has the wrong size; fetching it again", path)
            path.unlink()
        # Written before the transfer so that verify can name exactly what an interrupted
        # download left missing.
        write_manifest(target, manifest)
    except OSError as exc:
        raise WeightsError(f"{spec.name}: cannot write to {target}: {exc}") from exc

    logger.info("downloading %s (%d files, %s) into %s", spec.repo_id, len(records),
                human_size(manifest.total_size), target)
    resume_hint = (f"Partial files are kept in {target}; run `{fix_command(spec.name)}` again "
                   "to resume.")
    try:
        with _progress_bars(progress):
            hub.snapshot_download(
                spec.repo_id, revision=manifest.commit or spec.revision,
                local_dir=str(target), allow_patterns=list(spec.allow_patterns))
    except Exception as exc:
        known = _hub_error_message(exc, spec)
        if _is_disk_error(exc):
            reason = f"cannot write to {target}: {_clause(exc)}"
        elif known is not None:
            reason = known
        elif _is_network_error(exc) or isinstance(exc, OSError):
            reason = (f"the connection to the Hugging Face Hub failed (no network?): "
                      f"{_clause(exc)}")
        else:
            raise
        raise WeightsError(f"{spec.name}: download interrupted: {reason}. {resume_hint}") \
            from exc

    # The hub client returns an existing local_dir without error when it loses the network,
    # so success is decided by what is on disk, not by the call returning.
    report = verify(spec.name)
    if not report.ok:
        listed = "; ".join(str(p) for p in report.problems[:5])
        more = f" (and {len(report.problems) - 5} more)" if len(report.problems) > 5 else ""
        raise WeightsError(f"{spec.name}: the download did not complete: {listed}{more}. "
                           f"Check the network. {resume_hint}")
    logger.info("%s ready in %s", spec.name, target)
    return target
