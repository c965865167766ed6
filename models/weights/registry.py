"""Model weights: what the product needs from the Hugging Face Hub, where it lives, and whether
what is on disk is complete.

Each model is a plain folder ``models_dir()/<name>/`` in the layout its library loads with
``from_pretrained`` (diffusers for Wan2.2-Animate). ``download`` is the only function that
touches the network, and only the ``faceswap-cam models download`` command calls it: nothing
is fetched behind the user's back at run time. ``download`` also records what the Hub says
every file should be (size, sha256 or git blob sha1) in ``.faceswap-manifest.json``, so that
``verify`` can later name each missing or damaged file without any network.

This module must stay cheap to import (the CLI imports it on every start): no torch, and
huggingface_hub only inside the functions that talk to the Hub.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import errno
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

APP_NAME = "faceswap-cam"
MODELS_DIR_ENV = "FACESWAP_CAM_MODELS_DIR"
MANIFEST_NAME = ".faceswap-manifest.json"
MANIFEST_FORMAT = 1

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_HASH_CHUNK = 8 * 1024 * 1024
# huggingface_hub keeps its resume state here inside local_dir; it is not part of the model.
_HUB_STATE_DIR = ".cache"


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    """A model the product needs: which Hub repo, and which of its files.

    ``allow_patterns`` use huggingface_hub's matching (``fnmatch``, ``*`` also crosses ``/``,
    a trailing ``/`` means the whole folder). ``layout`` tells ``verify`` what a usable folder
    looks like when no manifest exists: ``diffusers`` (model_index.json and its component
    folders), ``transformers`` (config.json and weights at the top) or ``files`` (just the
    files the patterns name, e.g. an original checkpoint converted at first load).
    """

    name: str
    repo_id: str
    allow_patterns: tuple[str, ...]
    revision: str | None = None
    description: str = ""
    layout: str = "diffusers"


_LAYOUTS = ("diffusers", "transformers", "files")
_REGISTRY: dict[str, ModelSpec] = {}


class WeightsError(RuntimeError):
    """A weights operation failed; the message says what happened and what to do."""


class UnknownModelError(WeightsError, LookupError):
    """A model name that is not registered; the message lists the known ones."""


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add a model to the registry (later issues add the preprocessing models this way)."""
    if not _NAME_RE.match(spec.name):
        raise ValueError(f"model name {spec.name!r} must match {_NAME_RE.pattern} "
                         "(it names a folder and a CLI argument)")
    if spec.layout not in _LAYOUTS:
        raise ValueError(f"model {spec.name!r}: layout {spec.layout!r} is not one of {_LAYOUTS}")
    if not spec.allow_patterns:
        # An empty selection would make snapshot_download fetch the whole repo.
        raise ValueError(f"model {spec.name!r}: allow_patterns must not be empty")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def get_model(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(model_names()) or '(none)'}"
        ) from None


def _diffusers_component_patterns(
    weighted: Sequence[str], tokenizers: Sequence[str], configs_only: Sequence[str]
) -> tuple[str, ...]:
    """Patterns for a diffusers pipeline folder: safetensors only, so neither the .bin/.pth
    duplicates some repos carry nor the original (non-diffusers) checkpoints come along."""
    patterns = ["model_index.json"]
    for component in weighted:
        # *.json takes config.json and the shard index (*.safetensors.index.json).
        patterns += [f"{component}/*.json", f"{component}/*.safetensors"]
    for component in tokenizers:
        patterns += [f"{component}/*.json", f"{component}/*.model", f"{component}/*.txt"]
    for component in configs_only:
        patterns.append(f"{component}/*.json")
    return tuple(patterns)


WAN_ANIMATE = register_model(ModelSpec(
    name="wan-animate",
    repo_id="Wan-AI/Wan2.2-Animate-14B-Diffusers",
    # The components of diffusers' WanAnimatePipeline.
    allow_patterns=_diffusers_component_patterns(
        weighted=("transformer", "vae", "text_encoder", "image_encoder"),
        tokenizers=("tokenizer",),
        configs_only=("scheduler", "image_processor"),
    ),
    description="Wan2.2-Animate-14B (diffusers layout): the generative swap model",
))

# The preprocessing models (person, whole-body pose, person masks), as Wan-Animate's own
# preprocessing uses them. Repo ids are the defaults in person.py, pose.py, segmentation.py.
DETECTOR = register_model(ModelSpec(
    name="detector",
    repo_id="PekingU/rtdetr_v2_r18vd",
    allow_patterns=("*.json", "*.safetensors"),
    description="RT-DETRv2 person detector (transformers)",
    layout="transformers",
))
POSE = register_model(ModelSpec(
    name="pose",
    repo_id="JunkyByte/easy_ViTPose",
    # No transformers-format checkpoint has the 133 whole-body keypoints: the original
    # ViTPose-H whole-body file is converted once, locally, the first time it is loaded.
    allow_patterns=("torch/wholebody/vitpose-h-wholebody.pth",),
    description="ViTPose-H whole-body 133-keypoint pose (converted to transformers at first use)",
    layout="files",
))
SAM2 = register_model(ModelSpec(
    name="sam2",
    repo_id="facebook/sam2.1-hiera-tiny",
    allow_patterns=("*.json", "*.safetensors"),
    description="SAM2.1 tiny video segmenter (transformers), for replace mode's person mask",
    layout="transformers",
))


# --------------------------------------------------------------------------- locations


def models_dir() -> Path:
    """Where models live: ``$FACESWAP_CAM_MODELS_DIR``, else the platform's user data dir."""
    override = os.environ.get(MODELS_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME)) / "models"


def model_dir(name: str) -> Path:
    return models_dir() / get_model(name).name


def fix_command(name: str) -> str:
    return f"faceswap-cam models download --only {name}"


def matches_patterns(path: str, patterns: Iterable[str]) -> bool:
    """Whether a repo path is selected, exactly as huggingface_hub selects it for download."""
    path = path.replace("\\", "/")
    for raw in patterns:
        pattern = raw.replace("\\", "/")
        if pattern.endswith("/"):
            pattern += "*"
        if fnmatch.fnmatchcase(path, pattern):
            return True
    return False


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class FileRecord:
    """What the Hub says one file is. LFS files have a sha256; small files only a git blob
    sha1 (``git_sha1``); either may be missing if the Hub did not report it."""

    path: str
    size: int | None
    sha256: str | None = None
    git_sha1: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256, "git_sha1": self.git_sha1}

    @classmethod
    def from_json(cls, path: str, data: Mapping[str, Any]) -> FileRecord:
        size = data.get("size")
        sha256 = data.get("sha256")
        git_sha1 = data.get("git_sha1")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ValueError(f"{path}: bad size {size!r}")
        for label, value in (("sha256", sha256), ("git_sha1", git_sha1)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{path}: bad {label} {value!r}")
        return cls(path, size, sha256, git_sha1)


@dataclass(frozen=True)
class Manifest:
    name: str
    repo_id: str
    revision: str | None  # as requested (None = the default branch)
    commit: str | None  # what it resolved to when downloaded
    allow_patterns: tuple[str, ...]
    files: dict[str, FileRecord]
    created: str = ""

    @property
    def total_size(self) -> int:
        return sum(record.size or 0 for record in self.files.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "allow_patterns": list(self.allow_patterns),
            "created": self.created,
            "files": {path: self.files[path].to_json() for path in sorted(self.files)},
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a format-{MANIFEST_FORMAT} manifest")
        files = data.get("files")
        if not isinstance(files, dict):
            raise ValueError("no file list")
        records = {}
        for path, entry in files.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: bad entry")
            records[path] = FileRecord.from_json(path, entry)
        patterns = data.get("allow_patterns") or []
        return cls(
            name=str(data.get("name", "")),
            repo_id=str(data.get("repo_id", "")),
            revision=data.get("revision"),
            commit=data.get("commit"),
            allow_patterns=tuple(str(p) for p in patterns),
            files=records,
            created=str(data.get("created", "")),
        )


def read_manifest(folder: Path) -> Manifest:
    """Raises FileNotFoundError if absent, ValueError if unreadable."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from exc
    return Manifest.from_json(data)


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    # Write-then-rename: a crash never leaves a half-written manifest that verify would trust.
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_NAME)


# --------------------------------------------------------------------------- verify


class ProblemKind(enum.StrEnum):
    NOT_DOWNLOADED = "not downloaded"
    MISSING = "missing"
    SIZE_MISMATCH = "size mismatch"
    HASH_MISMATCH = "hash mismatch"
    NO_MANIFEST = "no manifest"
    BAD_MANIFEST = "bad manifest"
    BAD_LAYOUT = "bad layout"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    path: str  # relative to the model folder, "/"-separated; "" for the folder itself
    detail: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.kind}: {where}{self.detail}"


@dataclass
class VerifyReport:
    name: str
    path: Path
    deep: bool
    manifest_found: bool = False
    files_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def usable(self) -> bool:
        """Complete enough to load: a folder made by hand (no manifest) that passes the
        structural check still counts, so users who fetched the weights their own way can run."""
        return all(p.kind is ProblemKind.NO_MANIFEST for p in self.problems)

    @property
    def fixes(self) -> list[str]:
        return list(dict.fromkeys(p.fix for p in self.problems))

    def add(self, kind: ProblemKind, path: str, detail: str, fix: str | None = None) -> None:
        self.problems.append(Problem(kind, path, detail, fix or fix_command(self.name)))


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    _hash_into(digest, path)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_into(digest, path)
    return digest.hexdigest()


def _hash_into(digest: Any, path: Path) -> None:
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)


def _check_against_manifest(report: VerifyReport, manifest: Manifest) -> None:
    spec = get_model(report.name)
    fix = fix_command(report.name)
    stale = []
    if manifest.repo_id != spec.repo_id:
        stale.append(f"repo {manifest.repo_id!r}, expected {spec.repo_id!r}")
    if manifest.revision != spec.revision:
        stale.append(f"revision {manifest.revision!r}, expected {spec.revision!r}")
    if tuple(manifest.allow_patterns) != spec.allow_patterns:
        stale.append("the file selection changed since")
    if stale:
        report.add(ProblemKind.BAD_MANIFEST, MANIFEST_NAME,
                   f"made for another version of this model ({'; '.join(stale)})", fix)
    if not manifest.files:
        report.add(ProblemKind.BAD_MANIFEST, MANIFEST_NAME, "lists no files", fix)
    for rel in sorted(manifest.files):
        record = manifest.files[rel]
        path = report.path / rel
        report.files_checked += 1
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            report.add(ProblemKind.MISSING, rel, "not on disk", fix)
            continue
        if record.size is not None and size != record.size:
            report.add(ProblemKind.SIZE_MISMATCH, rel,
                       f"{size} bytes on disk, {record.size} expected", fix)
            continue
        if not report.deep:
            continue
        # Re-downloading skips a file whose local state looks current, so a damaged file of
        # the right size must be deleted first for the download to fetch it again.
        delete_fix = f"delete {path}, then run: {fix}"
        if record.sha256:
            logger.info("hashing %s", path)
            actual = _sha256(path)
            if actual != record.sha256:
                report.add(ProblemKind.HASH_MISMATCH, rel,
                           f"sha256 {actual}, expected {record.sha256}", delete_fix)
        elif record.git_sha1:
            actual = _git_blob_sha1(path)
            if actual != record.git_sha1:
                report.add(ProblemKind.HASH_MISMATCH, rel,
                           f"git blob sha1 {actual}, expected {record.git_sha1}", delete_fix)


_WEIGHTS_SUFFIXES = (".safetensors", ".bin")
# Components of these kinds carry no weights: configs and vocabularies only.
_WEIGHTLESS_CLASS_HINTS = ("Tokenizer", "Scheduler", "Processor", "FeatureExtractor")


def _check_weights_folder(report: VerifyReport, rel: str) -> None:
    """A folder from_pretrained can load: a config and weights, every listed shard present."""
    folder = report.path / rel if rel else report.path
    where = rel or "."
    if not (folder / "config.json").is_file():
        report.add(ProblemKind.BAD_LAYOUT, where, "no config.json")
    weights = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHTS_SUFFIXES)]
    if not weights:
        report.add(ProblemKind.BAD_LAYOUT, where, "no weight files (*.safetensors)")
    for index in folder.glob("*.index.json"):
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            shards = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, AttributeError, TypeError):
            report.add(ProblemKind.BAD_LAYOUT, _join(rel, index.name), "unreadable shard index")
            continue
        for shard in shards:
            if not (folder / shard).is_file():
                report.add(ProblemKind.MISSING, _join(rel, shard), "listed in "
                           f"{index.name} but not on disk")


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _check_structure(report: VerifyReport, layout: str) -> None:
    """The manifest-less check: is this folder shaped like something from_pretrained loads?"""
    if layout == "transformers":
        _check_weights_folder(report, "")
        return
    if layout == "files":
        if not any(p.is_file() for p in report.path.rglob("*") if _HUB_STATE_DIR not in p.parts):
            report.add(ProblemKind.MISSING, "", "no files on disk")
        return
    index_path = report.path / "model_index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.add(ProblemKind.MISSING, "model_index.json", "not on disk")
        return
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report.add(ProblemKind.BAD_LAYOUT, "model_index.json", f"unreadable: {exc}")
        return
    if not isinstance(index, dict):
        report.add(ProblemKind.BAD_LAYOUT, "model_index.json", "not a JSON object")
        return
    for component, value in sorted(index.items()):
        # Keys starting with "_" are pipeline metadata; [null, null] marks an absent optional.
        if component.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if value[0] is None or value[1] is None:
            continue
        folder = report.path / component
        if not folder.is_dir():
            report.add(ProblemKind.MISSING, component + "/", "component folder not on disk")
            continue
        if any(hint in str(value[1]) for hint in _WEIGHTLESS_CLASS_HINTS):
            if not any(folder.glob("*.json")):
                report.add(ProblemKind.BAD_LAYOUT, component, "no config (*.json)")
            continue
        _check_weights_folder(report, component)


def verify(name: str, *, deep: bool = False) -> VerifyReport:
    """Check a model folder offline. With ``deep``, also hash every file (slow: tens of GB)."""
    spec = get_model(name)
    report = VerifyReport(name=spec.name, path=model_dir(spec.name), deep=deep)
    if not report.path.is_dir() or not any(report.path.iterdir()):
        report.add(ProblemKind.NOT_DOWNLOADED, "", f"no files in {report.path}")
        return report
    try:
        manifest = read_manifest(report.path)
    except FileNotFoundError:
        report.add(ProblemKind.NO_MANIFEST, MANIFEST_NAME,
                   "no record of the expected files: only the folder's shape was checked; "
                   "re-run the download (it keeps the files already there) to record them")
    except (ValueError, UnicodeDecodeError) as exc:
        report.add(ProblemKind.BAD_MANIFEST, MANIFEST_NAME, f"unreadable ({exc})")
    else:
        report.manifest_found = True
        _check_against_manifest(report, manifest)
        return report
    _check_structure(report, spec.layout)
    return report


def is_present(name: str) -> bool:
    """Cheap (stat calls only): whether the engine can load this model from disk."""
    return verify(name).usable


def unavailable_reason(name: str) -> str | None:
    """None if the model is on disk, else what is wrong and how to get it (for the engine
    registry's ``unavailable_reason``)."""
    report = verify(name)
    if report.usable:
        return None
    spec = get_model(name)
    if any(p.kind is ProblemKind.NOT_DOWNLOADED for p in report.problems):
        what = f"the {name} weights ({spec.repo_id}) are not in {report.path}"
    else:
        first = next(p for p in report.problems if p.kind is not ProblemKind.NO_MANIFEST)
        what = (f"the {name} weights in {report.path} are incomplete "
                f"({len(report.problems)} problem(s), e.g. {first})")
    return f"{what}; get them with: {fix_command(name)}"


# --------------------------------------------------------------------------- list


@dataclass(frozen=True)
class ModelStatus:
    name: str
    repo_id: str
    path: Path
    present: bool
    size_bytes: int  # everything under the folder, partial downloads included
    description: str = ""


def _disk_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for file in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / file).lstat().st_size
    return total


def list_models() -> list[ModelStatus]:
    statuses = []
    for name in model_names():
        spec = get_model(name)
        path = model_dir(name)
        statuses.append(ModelStatus(name, spec.repo_id, path, is_present(name),
                                    _disk_size(path) if path.is_dir() else 0, spec.description))
    return statuses


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
                           "pip install 'faceswap-cam[models]'") from exc
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


def _human(size: int) -> str:
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
            f"{spec.name}: needs {_human(needed)} more disk space in {target}, only "
            f"{_human(free)} free. Free some space or set {MODELS_DIR_ENV} to a folder on "
            "another disk. Nothing was changed.")

    try:
        target.mkdir(parents=True, exist_ok=True)
        for path in damaged:
            logger.warning("%s has the wrong size; fetching it again", path)
            path.unlink()
        # Written before the transfer so that verify can name exactly what an interrupted
        # download left missing.
        _write_manifest(target, manifest)
    except OSError as exc:
        raise WeightsError(f"{spec.name}: cannot write to {target}: {exc}") from exc

    logger.info("downloading %s (%d files, %s) into %s", spec.repo_id, len(records),
                _human(manifest.total_size), target)
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


# --------------------------------------------------------------------------- CLI glue


def add_models_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``models {download,verify,list}`` to a CLI's subparsers; dispatch to run_models."""
    known = ", ".join(model_names())
    models: argparse.ArgumentParser = subparsers.add_parser(
        "models", help="download, verify and list model weights",
        description=f"Model weights live in {models_dir()} (set {MODELS_DIR_ENV} to move them). "
        "Nothing is downloaded unless you run `models download`.")
    commands = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    dl = commands.add_parser("download", help="download (or resume) model weights")
    dl.add_argument("--only", metavar="NAME", help=f"just this model ({known})")
    dl.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bars")
    check = commands.add_parser("verify", help="check the weights on disk (offline)")
    check.add_argument("--only", metavar="NAME", help=f"just this model ({known})")
    check.add_argument("--deep", action="store_true",
                       help="also hash every file against the Hub's checksums (slow)")
    commands.add_parser("list", help="list the models, whether present, size on disk")
    return models


def run_models(args: argparse.Namespace, *, api: HubApi | None = None) -> int:
    """Run a ``models`` subcommand; returns 0 ok, 1 problems or failure, 2 bad usage."""
    command = getattr(args, "models_command", None)
    if command not in ("download", "verify", "list"):
        print("faceswap-cam models: choose one of: download, verify, list",  # noqa: T201
              file=sys.stderr)
        return EXIT_USAGE
    only = getattr(args, "only", None)
    if only is not None:
        try:
            get_model(only)
        except UnknownModelError as exc:
            print(f"faceswap-cam models {command}: {exc}", file=sys.stderr)  # noqa: T201
            return EXIT_USAGE
    names = [only] if only is not None else model_names()
    if command == "download":
        return _cli_download(names, progress=getattr(args, "progress", True), api=api)
    if command == "verify":
        return _cli_verify(names, deep=getattr(args, "deep", False))
    return _cli_list()


def _cli_download(names: Sequence[str], *, progress: bool, api: HubApi | None) -> int:
    failed = 0
    for name in names:
        try:
            path = download(name, progress=progress, api=api)
        except WeightsError as exc:
            failed += 1
            print(f"faceswap-cam models download: {exc}", file=sys.stderr)  # noqa: T201
            continue
        print(f"{name}: ready in {path} ({_human(_disk_size(path))})")  # noqa: T201
    return EXIT_PROBLEM if failed else EXIT_OK


def _cli_verify(names: Sequence[str], *, deep: bool) -> int:
    bad = 0
    for name in names:
        report = verify(name, deep=deep)
        if report.ok:
            how = "sizes and checksums" if deep else "sizes"
            print(f"{name}: ok ({report.files_checked} files, {how} match) "  # noqa: T201
                  f"in {report.path}")
            continue
        bad += 1
        print(f"{name}: {len(report.problems)} problem(s) in {report.path}")  # noqa: T201
        for problem in report.problems:
            print(f"  {problem}")  # noqa: T201
        for fix in report.fixes:
            print(f"  fix: {fix}")  # noqa: T201
    return EXIT_PROBLEM if bad else EXIT_OK


def _cli_list() -> int:
    print(f"models folder: {models_dir()}")  # noqa: T201
    for status in list_models():
        state = "present" if status.present else "absent "
        print(f"{status.name:<16} {state} {_human(status.size_bytes):>9}  "  # noqa: T201
              f"{status.repo_id}  {status.path}")
    return EXIT_OK
