"""The reference library writes through paths.atomic_write: what a crash mid-write leaves is
cleared under the lock, and the stored photos stay private to the user."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_cam.daemon.references import ReferenceLibrary


def png(seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def test_leftovers_of_an_interrupted_write_are_cleared(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path)
    library.add(png(), name="alice")
    # What atomic_write leaves when the process dies between creating and renaming.
    for stray in (".alice.png.k2j4x1.tmp", ".index.json.a8c3fz.tmp", ".tmp-old.png"):
        (tmp_path / stray).write_bytes(b"partial")
    library.add(png(1), name="bob")
    assert sorted(os.listdir(tmp_path)) == [".lock", "alice.png", "bob.png", "index.json"]
    assert [info.name for info in library.list()] == ["alice", "bob"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_stored_files_are_private(tmp_path: Path) -> None:
    library = ReferenceLibrary(tmp_path)
    library.add(png(), name="alice")
    library.select("alice")
    for name in ("alice.png", "index.json", "selected.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
