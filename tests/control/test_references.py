"""The reference library: checked, normalised, named, persisted and safe to share."""

from __future__ import annotations

import fnmatch
import json
import multiprocessing
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_cam.daemon.paths import REFERENCES_DIR_ENV, atomic_write, references_dir
from faceswap_cam.daemon.references import (
    MAX_STORED_SIDE,
    TEMP_PATTERNS,
    ReferenceLibrary,
    ReferenceRejected,
    sanitize_name,
)
from tests.shared_data import SHARED_DATA, needs_shared_data


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def portrait(width: int = 200, height: int = 240, seed: int = 0) -> np.ndarray:
    """A synthetic image with structure, so resizing and PNG encoding do real work."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 90, np.uint8)
    image[::8] = rng.integers(0, 255, (len(range(0, height, 8)), width, 3), dtype=np.uint8)
    cv2.circle(image, (width // 2, height // 2), min(width, height) // 3, (60, 140, 200), -1)
    return image


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def temp_files_in(folder: Path) -> list[str]:
    """Files a write left half done (named as atomic_write names its temporary files)."""
    return [f for f in files_in(folder)
            if any(fnmatch.fnmatchcase(f, pattern) for pattern in TEMP_PATTERNS)]


def test_a_temp_file_left_by_an_interrupted_write_is_seen(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A crash between writing and renaming: the temporary file stays behind.
    monkeypatch.setattr(os, "replace", lambda src, dst: None)
    atomic_write(tmp_path / "index.json", b"{}")
    assert len(temp_files_in(tmp_path)) == 1


def add_many(folder: str, count: int, start: threading.Barrier | None = None) -> None:
    """Run in a spawned process: add ``count`` images all asking for the same name."""
    library = ReferenceLibrary(Path(folder))
    data = encode(portrait(96, 96))
    if start is not None:
        start.wait()
    for _ in range(count):
        library.add(data, name="face")


# ----- adding and normalising


@needs_shared_data
def test_real_photos_are_added_and_normalised(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path / "refs")
    tall = library.add(SHARED_DATA / "reference-portrait.jpg")
    wide = library.add(SHARED_DATA / "person-720p.jpg")
    assert tall.name == "reference-portrait"
    # 970x2204 is over the 2048 limit: the long side is pinned to it, the aspect kept.
    assert (tall.width, tall.height) == (round(970 * MAX_STORED_SIDE / 2204), MAX_STORED_SIDE)
    assert (wide.name, wide.width, wide.height) == ("person-720p", 1280, 720)
    assert tall.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The JPEG carried EXIF (camera, caption); the stored PNG carries none.
    assert b"Canon" in (SHARED_DATA / "reference-portrait.jpg").read_bytes()
    assert b"Canon" not in tall.path.read_bytes()
    assert b"eXIf" not in tall.path.read_bytes()
    assert library.get("person-720p").shape == (720, 1280, 3)
    assert [info.name for info in library.list()] == ["person-720p", "reference-portrait"]


def test_large_image_is_downscaled_to_png(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path)
    info = library.add(encode(portrait(3000, 1500), ".jpg"), name="big")
    assert (info.width, info.height) == (MAX_STORED_SIDE, 1024)
    assert info.path == tmp_path / "big.png"
    assert info.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = library.get("big")
    assert stored.shape == (1024, MAX_STORED_SIDE, 3)
    assert stored.dtype == np.uint8


def test_small_enough_image_is_stored_losslessly(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path)
    image = portrait()
    info = library.add(encode(image, ".bmp"), name="exact")
    assert (info.width, info.height, info.selected) == (200, 240, False)
    assert abs((info.added - datetime.now(UTC)).total_seconds()) < 60
    np.testing.assert_array_equal(library.get("exact"), image)


# ----- rejections leave the library as it was


def test_bad_images_are_rejected_and_leave_nothing(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path)
    library.add(encode(portrait()), name="keep")
    before = files_in(tmp_path)
    index_before = (tmp_path / "index.json").read_bytes()

    corrupt = encode(portrait(), ".jpg")
    (tmp_path.parent / "corrupt.jpg").write_bytes(corrupt[:40] + b"\0" * 64)
    (tmp_path.parent / "notes.txt").write_text("not an image at all")
    cases: list[tuple[bytes | Path, str]] = [
        (tmp_path.parent / "corrupt.jpg", "cannot be decoded"),
        (tmp_path.parent / "notes.txt", "cannot be decoded"),
        (b"", "cannot be decoded"),
        (tmp_path.parent / "missing.png", "not found"),
        (encode(np.zeros((100, 9000, 3), np.uint8)), "too large"),
        (encode(np.zeros((30, 40, 3), np.uint8)), r"too small \(40x30\)"),
        # Fine as given, but only 16 px high once the long side is brought down to 2048.
        (encode(np.zeros((64, 8000, 3), np.uint8)), r"downscaled.*too small"),
    ]
    for data, reason in cases:
        with pytest.raises(ReferenceRejected, match=reason) as caught:
            library.add(data, name="bad")
        assert isinstance(caught.value, ValueError)
        assert caught.value.reason == str(caught.value)
        assert files_in(tmp_path) == before, data
    assert (tmp_path / "index.json").read_bytes() == index_before
    assert [info.name for info in library.list()] == ["keep"]


def test_person_check_reason_passes_through(tmp_path: Path) -> None:
    seen: list[tuple[int, ...]] = []

    def two_people(image: np.ndarray) -> str | None:
        seen.append(image.shape)
        return "found 2 people; use a photo of exactly one person"

    library = ReferenceLibrary(tmp_path, person_check=two_people)
    with pytest.raises(ReferenceRejected, match="found 2 people; use a photo of exactly one"):
        library.add(encode(portrait(3000, 1500)), name="group")
    # The check sees what would be stored: normalised BGR.
    assert seen == [(1024, MAX_STORED_SIDE, 3)]
    assert files_in(tmp_path) == []
    assert library.list() == []

    accepting = ReferenceLibrary(tmp_path, person_check=lambda image: None)
    assert accepting.add(encode(portrait()), name="one").name == "one"


# ----- names


@pytest.mark.parametrize(("raw", "expected"), [
    ("My Face", "my-face"),
    ("Élena Kagan (2010)", "elena-kagan-2010"),
    ("../../etc/passwd", "etc-passwd"),
    ("snake_case-OK", "snake_case-ok"),
    ("***", "reference"),
    ("", "reference"),
    ("日本", "reference"),
    ("CON", "con-reference"),
    ("x" * 100, "x" * 64),
    ("a" * 63 + " b", "a" * 63),
])
def test_names_are_sanitised(raw: str, expected: str) -> None:
    assert sanitize_name(raw) == expected


def test_names_come_from_the_file_and_are_deduplicated(tmp_path: Path) -> None:
    source = tmp_path / "src" / "Holiday Photo.JPG"
    source.parent.mkdir()
    source.write_bytes(encode(portrait(), ".jpg"))
    library = ReferenceLibrary(tmp_path / "refs")
    names = [library.add(source).name for _ in range(3)]
    assert names == ["holiday-photo", "holiday-photo-2", "holiday-photo-3"]
    assert library.add(encode(portrait())).name == "reference"
    assert library.add(encode(portrait())).name == "reference-2"
    long = "n" * 64
    assert library.add(encode(portrait()), name=long).name == long
    assert library.add(encode(portrait()), name=long).name == "n" * 62 + "-2"
    listed = [info.name for info in library.list()]
    assert listed == sorted(listed)
    assert len(listed) == 7


# ----- selection, persistence, removal


def test_select_survives_a_restart(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path)
    library.add(encode(portrait()), name="alice")
    library.add(encode(portrait()), name="bob")
    assert library.selected() is None
    with pytest.raises(KeyError):
        library.select("carol")
    library.select("bob")
    assert library.selected() == "bob"
    assert [(i.name, i.selected) for i in library.list()] == [("alice", False), ("bob", True)]

    reopened = ReferenceLibrary(tmp_path)
    assert reopened.selected() == "bob"
    assert [i.name for i in reopened.list()] == ["alice", "bob"]
    assert reopened.list()[0].added == library.list()[0].added
    np.testing.assert_array_equal(reopened.get("alice"), portrait())
    reopened.select(None)
    assert ReferenceLibrary(tmp_path).selected() is None


def test_remove(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path)
    library.add(encode(portrait()), name="alice")
    library.add(encode(portrait()), name="bob")
    library.select("bob")
    with pytest.raises(KeyError):
        library.remove("carol")
    library.remove("alice")
    assert library.selected() == "bob"
    assert not (tmp_path / "alice.png").exists()
    library.remove("bob")
    assert library.selected() is None
    assert ReferenceLibrary(tmp_path).selected() is None
    assert library.list() == []
    assert json.loads((tmp_path / "selected.json").read_text()) == {"name": None}
    with pytest.raises(KeyError):
        library.get("bob")
    assert [f for f in files_in(tmp_path) if f.endswith(".png")] == []


def test_damaged_index_is_rebuilt_and_leftovers_cleared(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path)
    library.add(encode(portrait(120, 100)), name="alice")
    (tmp_path / "index.json").write_text("{ not json")
    (tmp_path / ".tmp-crashed.png").write_bytes(b"partial")
    infos = library.list()
    assert [(i.name, i.width, i.height) for i in infos] == [("alice", 120, 100)]
    library.add(encode(portrait()), name="bob")
    assert ".tmp-crashed.png" not in files_in(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    assert sorted(index["references"]) == ["alice", "bob"]


def test_default_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(REFERENCES_DIR_ENV, raising=False)
    default = references_dir()
    assert default.name == "references"
    assert "faceswap-cam" in default.parts
    monkeypatch.setenv(REFERENCES_DIR_ENV, str(tmp_path / "mine"))
    assert references_dir() == tmp_path / "mine"


# ----- concurrency


def assert_consistent(folder: Path, expected: int) -> None:
    names = [info.name for info in ReferenceLibrary(folder).list()]
    assert len(names) == len(set(names)) == expected
    assert set(names) == {"face"} | {f"face-{n}" for n in range(2, expected + 1)}
    index = json.loads((folder / "index.json").read_text())
    assert sorted(index["references"]) == sorted(names)
    pngs = sorted(f[:-4] for f in files_in(folder) if f.endswith(".png"))
    assert pngs == sorted(names)
    assert temp_files_in(folder) == []


def test_concurrent_adds_from_threads(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path)
    data = encode(portrait(96, 96))
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            library.add(data, name="face")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_consistent(tmp_path, 8)


def test_concurrent_adds_from_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    processes = [context.Process(target=add_many, args=(str(tmp_path), 4, start))
                 for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert_consistent(tmp_path, 12)
