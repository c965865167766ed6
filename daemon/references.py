"""The reference-face library: the user's reference images, kept in one folder.

On disk (all in the library folder):

- ``<name>.png``: each reference, re-encoded as PNG (no metadata survives), longest side at
  most ``MAX_STORED_SIDE``. Names are sanitised to ``[a-z0-9_-]``, so they are safe file names
  everywhere.
- ``index.json``: ``{"version": 1, "references": {name: {"width", "height", "added"}}}``, the
  one list of what the library holds (``added`` is ISO 8601, UTC).
- ``selected.json``: ``{"name": name}``, the reference in use, so the choice survives restarts.
- ``.lock``: taken (``flock`` / ``msvcrt.locking``) around every read and write, so threads and
  processes sharing the folder never see a half-made change or lose an entry.
- ``.<file>.*.tmp``: files being written (``paths.atomic_write``); each is renamed into place.
  Because they only exist while the lock is held, any found later are leftovers of a crash and
  are removed (so are the ``.tmp-*`` files earlier versions wrote).

A single index (rather than a sidecar per image) lets one locked read-modify-replace keep the
whole library consistent, and a crash between writing an image and the index leaves at worst
an unlisted PNG, never a listed entry without its image.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceswap_cam.daemon.paths import atomic_write, file_lock
from faceswap_cam.models.reference import (
    PNG_MAGIC,
    ReferenceError,
    check_reference,
    decode_reference,
    measure_image,
)

logger = logging.getLogger(__name__)

MAX_STORED_SIDE = 2048  # the model sees far less; larger only costs disk and load time
MAX_NAME_LENGTH = 64
FALLBACK_NAME = "reference"
INDEX_FILE = "index.json"
SELECTED_FILE = "selected.json"
LOCK_FILE = ".lock"
# What atomic_write names its temporary files, and what earlier versions named theirs.
TEMP_PATTERNS = (".*.tmp", ".tmp-*")
INDEX_VERSION = 1

_NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
# These cannot be file names on Windows, whatever the extension.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul",
                     *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}

PersonCheck = Callable[[np.ndarray], str | None]


class ReferenceRejected(ValueError):
    """The image cannot join the library; the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ReferenceInfo:
    name: str
    path: Path
    width: int
    height: int
    added: datetime
    selected: bool


@dataclass(frozen=True)
class _Entry:
    width: int
    height: int
    added: datetime


def sanitize_name(raw: str) -> str:
    """A safe library name: lowercase ASCII, digits, '-' and '_', at most 64 characters."""
    # Decompose accents first so "Élena" keeps its letters as "elena" rather than losing them.
    ascii_text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^a-z0-9_-]+", "-", ascii_text.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-_")
    name = name[:MAX_NAME_LENGTH].rstrip("-_")
    if not name:
        return FALLBACK_NAME
    if name in _WINDOWS_RESERVED:
        name = f"{name}-{FALLBACK_NAME}"
    return name


def _with_suffix(base: str, number: int) -> str:
    suffix = f"-{number}"
    return base[:MAX_NAME_LENGTH - len(suffix)].rstrip("-_") + suffix


def _normalise(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= MAX_STORED_SIDE:
        return image
    scale = MAX_STORED_SIDE / longest
    # Pin the long side to exactly the limit; rounding the short one keeps the aspect.
    if width >= height:
        size = (MAX_STORED_SIDE, max(1, round(height * scale)))
    else:
        size = (max(1, round(width * scale)), MAX_STORED_SIDE)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's header, without decoding the pixels."""
    try:
        with path.open("rb") as file:
            head = file.read(24)
    except OSError:
        return None
    return measure_image(head) if head.startswith(PNG_MAGIC) else None


def _write_json(path: Path, value: object) -> None:
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"),
                 mode=0o600)


class ReferenceLibrary:
    """Reference images in one folder, shared safely by threads and processes.

    ``person_check`` returns None when an image shows exactly one person, else the reason it
    does not; None skips the check (no detector without the model stack).
    """

    def __init__(self, folder: Path, *, person_check: PersonCheck | None = None) -> None:
        self.folder = Path(folder)
        self.person_check = person_check
        self.folder.mkdir(parents=True, exist_ok=True)

    # ----- public API

    def add(self, data: bytes | Path, name: str | None = None) -> ReferenceInfo:
        """Check, normalise and store an image; ReferenceRejected says why one is refused."""
        if name is None:
            name = data.stem if isinstance(data, Path) else FALLBACK_NAME
        label = data.name if isinstance(data, Path) else "reference image"
        # The expensive part (decode, check, encode) runs before taking the lock, so other
        # processes are held up only for the few small writes.
        try:
            image = decode_reference(data)
            stored = _normalise(image)
            if stored is not image:
                check_reference(stored, f"{label} (downscaled to {MAX_STORED_SIDE} px)")
        except ReferenceError as exc:
            raise ReferenceRejected(str(exc)) from exc
        if self.person_check is not None:
            reason = self.person_check(stored)
            if reason is not None:
                raise ReferenceRejected(f"{label}: {reason}")
        ok, encoded = cv2.imencode(".png", stored)
        if not ok:
            raise ReferenceRejected(f"{label} could not be re-encoded as PNG")
        png = encoded.tobytes()
        height, width = stored.shape[:2]
        base = sanitize_name(name)

        with self._locked():
            self._remove_leftovers()
            index = self._load_index()
            final = self._allocate(base, index)
            path = self._path(final)
            # Private like the rest of the user's data: these are photos of people.
            atomic_write(path, png, mode=0o600)
            entry = _Entry(width=width, height=height, added=datetime.now(UTC))
            index[final] = entry
            try:
                self._save_index(index)
            except BaseException:
                # Without its index entry the image would be an invisible orphan.
                with suppress(OSError):
                    path.unlink()
                raise
        logger.info("reference %r added (%dx%d) to %s", final, width, height, self.folder)
        return self._info(final, entry, selected=None)

    def list(self) -> list[ReferenceInfo]:
        """Every reference, sorted by name."""
        with self._locked():
            index = self._load_index()
            chosen = self._read_selected(index)
        return [self._info(name, index[name], selected=chosen) for name in sorted(index)]

    def get(self, name: str) -> np.ndarray:
        """The stored BGR pixels of ``name``; KeyError if the library has none by that name."""
        with self._locked():
            index = self._load_index()
            if name not in index:
                raise KeyError(name)
            raw = self._path(name).read_bytes()
        # Measured before it is decoded, like an upload: a file put in the folder by hand
        # is not trusted either.
        try:
            return decode_reference(raw, f"stored image {self._path(name)}")
        except ReferenceError as exc:
            raise KeyError(f"{name}: {exc}") from exc

    def remove(self, name: str) -> None:
        """Delete ``name`` (KeyError if unknown); deleting the selected one clears the choice."""
        with self._locked():
            self._remove_leftovers()
            index = self._load_index()
            if name not in index:
                raise KeyError(name)
            was_selected = self._read_selected(index) == name
            del index[name]
            # Index first: a crash after it leaves an unlisted file, not a listed missing one.
            self._save_index(index)
            if was_selected:
                self._write_selected(None)
            with suppress(FileNotFoundError):
                self._path(name).unlink()
        logger.info("reference %r removed from %s", name, self.folder)

    def select(self, name: str | None) -> None:
        """Make ``name`` the reference in use (KeyError if unknown); None clears the choice."""
        with self._locked():
            if name is not None and name not in self._load_index():
                raise KeyError(name)
            self._write_selected(name)
        logger.info("reference %r selected in %s", name, self.folder)

    def selected(self) -> str | None:
        """The name chosen with select(), or None (also when it has since gone)."""
        with self._locked():
            return self._read_selected(self._load_index())

    # ----- storage

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.png"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Recreated if someone deleted the folder while we run, rather than failing obscurely.
        self.folder.mkdir(parents=True, exist_ok=True)
        with file_lock(self.folder / LOCK_FILE):
            yield

    def _info(self, name: str, entry: _Entry, selected: str | None) -> ReferenceInfo:
        return ReferenceInfo(name=name, path=self._path(name), width=entry.width,
                             height=entry.height, added=entry.added, selected=name == selected)

    def _allocate(self, base: str, index: dict[str, _Entry]) -> str:
        # Unlisted PNGs count as taken too: never overwrite a file we did not account for.
        taken = set(index) | {p.stem for p in self.folder.glob("*.png")}
        if base not in taken:
            return base
        number = 2
        while _with_suffix(base, number) in taken:
            number += 1
        return _with_suffix(base, number)

    def _remove_leftovers(self) -> None:
        # Temp files exist only while the lock is held, so under the lock any are from a crash.
        for pattern in TEMP_PATTERNS:
            for stray in self.folder.glob(pattern):
                logger.warning("removing %s, left by an interrupted write", stray)
                with suppress(OSError):
                    stray.unlink()

    def _load_index(self) -> dict[str, _Entry]:
        path = self.folder / INDEX_FILE
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._rebuild_index()
        except (OSError, ValueError) as exc:
            logger.warning("%s is unreadable (%s); rebuilding it from the images", path, exc)
            return self._rebuild_index()
        refs = raw.get("references") if isinstance(raw, dict) else None
        if not isinstance(refs, dict):
            logger.warning("%s has no references table; rebuilding it from the images", path)
            return self._rebuild_index()
        index: dict[str, _Entry] = {}
        for name, value in refs.items():
            entry = self._parse_entry(name, value)
            if entry is None:
                logger.warning("%s: ignoring malformed entry %r", path, name)
            elif not self._path(name).is_file():
                logger.warning("%s: ignoring %r, whose image is missing", path, name)
            else:
                index[name] = entry
        return index

    @staticmethod
    def _parse_entry(name: object, value: object) -> _Entry | None:
        if not isinstance(name, str) or not _NAME_RE.match(name) or not isinstance(value, dict):
            return None
        width, height, added = value.get("width"), value.get("height"), value.get("added")
        if not isinstance(width, int) or not isinstance(height, int) or not isinstance(added, str):
            return None
        try:
            when = datetime.fromisoformat(added)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return _Entry(width=width, height=height, added=when)

    def _rebuild_index(self) -> dict[str, _Entry]:
        """An index from the PNGs present: recovers a lost or damaged index.json."""
        index: dict[str, _Entry] = {}
        for path in sorted(self.folder.glob("*.png")):
            size = _png_size(path)
            if not _NAME_RE.match(path.stem) or size is None:
                continue
            added = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            index[path.stem] = _Entry(width=size[0], height=size[1], added=added)
        if index:
            logger.warning("index of %s rebuilt from %d images", self.folder, len(index))
        return index

    def _save_index(self, index: dict[str, _Entry]) -> None:
        refs = {name: {"width": e.width, "height": e.height, "added": e.added.isoformat()}
                for name, e in sorted(index.items())}
        _write_json(self.folder / INDEX_FILE, {"version": INDEX_VERSION, "references": refs})

    def _read_selected(self, index: dict[str, _Entry]) -> str | None:
        path = self.folder / SELECTED_FILE
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("%s is unreadable (%s); no reference selected", path, exc)
            return None
        name = raw.get("name") if isinstance(raw, dict) else None
        return name if isinstance(name, str) and name in index else None

    def _write_selected(self, name: str | None) -> None:
        _write_json(self.folder / SELECTED_FILE, {"name": name})
