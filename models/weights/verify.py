"""Whether the weights on disk are complete, offline: the manifest ``download`` records, and
the checks against it (or, without one, against the folder's expected shape).

``download`` records what the Hub says every file should be (size, sha256 or git blob sha1) in
``.faceswap-manifest.json``, so that ``verify`` can later name each missing or damaged file
without any network.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceswap_cam.daemon.paths import atomic_write
from faceswap_cam.models.weights.registry import fix_command, get_model, model_dir, model_names

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".faceswap-manifest.json"
MANIFEST_FORMAT = 1

_HASH_CHUNK = 8 * 1024 * 1024
# huggingface_hub keeps its resume state here inside local_dir; it is not part of the model.
_HUB_STATE_DIR = ".cache"


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


def write_manifest(folder: Path, manifest: Manifest) -> None:
    # Atomic: a crash never leaves a half-written manifest that verify would trust.
    atomic_write(folder / MANIFEST_NAME,
                 (json.dumps(manifest.to_json(), indent=2) + "\n").encode("utf-8"))


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
        report.add(ProblemKind.BAD_LAYOUT, where, "has no config.json")
    weights = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHTS_SUFFIXES)]
    if not weights:
        report.add(ProblemKind.BAD_LAYOUT, where, "has no weight files (*.safetensors)")
    for index in folder.glob("*.index.json"):
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            shards = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, AttributeError, TypeError):
            report.add(ProblemKind.BAD_LAYOUT, _join(rel, index.name),
                       "is not a readable shard index")
            continue
        for shard in shards:
            if not (folder / shard).is_file():
                report.add(ProblemKind.MISSING, _join(rel, shard), "listed in "
                           f"{index.name} but not on disk")


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def check_structure(name: str, folder: Path) -> list[Problem]:
    """Whether ``folder`` is shaped like registered model ``name`` (its layout): the check a
    download without a manifest gets, and the one for a folder a setting names. A problem's
    ``detail`` reads after its path ("vae: has no weight files ...")."""
    report = VerifyReport(name=name, path=folder, deep=False)
    _check_structure(report, get_model(name).layout)
    return report.problems


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
        report.add(ProblemKind.BAD_LAYOUT, "model_index.json", f"is unreadable: {exc}")
        return
    if not isinstance(index, dict):
        report.add(ProblemKind.BAD_LAYOUT, "model_index.json", "is not a JSON object")
        return
    components = {component: value for component, value in index.items()
                  if not component.startswith("_") and isinstance(value, list)
                  and len(value) == 2}
    if "_class_name" not in index or not components:
        report.add(ProblemKind.BAD_LAYOUT, "model_index.json",
                   "names no pipeline and its components (not a diffusers pipeline folder)")
        return
    for component, value in sorted(components.items()):
        # Keys starting with "_" are pipeline metadata; [null, null] marks an absent optional.
        if value[0] is None or value[1] is None:
            continue
        folder = report.path / component
        if not folder.is_dir():
            report.add(ProblemKind.MISSING, component + "/", "component folder not on disk")
            continue
        if any(hint in str(value[1]) for hint in _WEIGHTLESS_CLASS_HINTS):
            if not any(folder.glob("*.json")):
                report.add(ProblemKind.BAD_LAYOUT, component, "has no config (*.json)")
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


def disk_size(folder: Path) -> int:
    """Bytes under ``folder``, partial downloads included."""
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
                                    disk_size(path) if path.is_dir() else 0, spec.description))
    return statuses
