"""Reference images are checked before any model sees them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_cam.models.reference import (
    MAX_JPEG_SCANS,
    MAX_PIXELS,
    ReferenceError,
    check_reference,
    decode_reference,
    jpeg_scans,
)
from tests.shared_data import SHARED_DATA, needs_shared_data


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


@needs_shared_data
def test_real_portrait_decodes() -> None:
    image = decode_reference(SHARED_DATA / "reference-portrait.jpg")
    assert image.shape == (2204, 970, 3)  # the tall-image case is accepted


def test_bad_references_say_why(tmp_path: Path) -> None:
    with pytest.raises(ReferenceError, match="not found"):
        decode_reference(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ReferenceError, match="cannot be decoded"):
        decode_reference(tmp_path / "text.png")
    with pytest.raises(ReferenceError, match="cannot be decoded"):
        decode_reference(b"")
    with pytest.raises(ReferenceError, match=r"too small \(40x30\)"):
        decode_reference(png(np.zeros((30, 40, 3), np.uint8)))
    with pytest.raises(ReferenceError, match="too large"):
        check_reference(np.zeros((100, 9000, 3), np.uint8))
    with pytest.raises(ReferenceError, match="colour image"):
        check_reference(np.zeros((100, 100), np.uint8))


def test_huge_image_is_refused_before_decoding() -> None:
    side = int((MAX_PIXELS * 1.3) ** 0.5) // 8 * 8
    # A flat PNG compresses to almost nothing: the classic decompression bomb.
    data = png(np.zeros((side, side), np.uint8))
    assert len(data) < 2_000_000
    with pytest.raises(ReferenceError, match="too large"):
        decode_reference(data)


def jpeg(image: np.ndarray, *, progressive: bool) -> bytes:
    import io

    import PIL.Image

    out = io.BytesIO()
    PIL.Image.fromarray(image).save(out, "JPEG", progressive=progressive, quality=85)
    return out.getvalue()


def test_progressive_jpegs_decode_and_a_scan_bomb_is_refused_before_decoding() -> None:
    rng = np.random.default_rng(1)
    face = cv2.GaussianBlur(rng.integers(0, 256, (240, 200, 3), dtype=np.uint8), (9, 9), 3)
    assert jpeg_scans(jpeg(face, progressive=False)) == 1
    progressive = jpeg(face, progressive=True)
    assert jpeg_scans(progressive) == 10  # libjpeg's script for a colour image
    assert decode_reference(progressive).shape == (240, 200, 3)
    # The last scan again and again: each one a pass over the whole image when decoded (at
    # 36 MP, 20 ms a scan however few its bytes).
    last_scan = progressive.rindex(b"\xff\xda")
    scans = progressive[last_scan:-2] * MAX_JPEG_SCANS
    bomb = progressive[:-2] + scans + b"\xff\xd9"
    assert jpeg_scans(bomb) == 10 + MAX_JPEG_SCANS
    with pytest.raises(ReferenceError, match=f"over {MAX_JPEG_SCANS} scans"):
        decode_reference(bomb)
    # A broken segment before them stops a strict walk of the markers, not libjpeg, which
    # skips on to the next marker and decodes every scan after it.
    for damage in (b"\xff\xfe\x00\x02\x00", b"\xff\xe1\x00\x01",
                   b"\xff\xfe\x00\x02\xff\x00", b"\x00\x00garbage"):
        with pytest.raises(ReferenceError, match=f"over {MAX_JPEG_SCANS} scans"):
            decode_reference(progressive[:-2] + damage + scans + b"\xff\xd9")


def test_what_follows_a_jpeg_is_not_counted_as_its_scans() -> None:
    # A motion photo: a video after the picture's end (high-entropy bytes hold about 16 FF DA
    # pairs a MB); an MPO: more pictures after the first. libjpeg decodes only the first.
    rng = np.random.default_rng(2)
    face = cv2.GaussianBlur(rng.integers(0, 256, (240, 200, 3), dtype=np.uint8), (9, 9), 3)
    progressive = jpeg(face, progressive=True)
    trailer = rng.integers(0, 256, 8_000_000, dtype=np.uint8).tobytes()
    assert trailer.count(b"\xff\xda") > MAX_JPEG_SCANS
    motion_photo = progressive + trailer
    assert jpeg_scans(motion_photo) == 10
    assert decode_reference(motion_photo).shape == (240, 200, 3)
    assert jpeg_scans(progressive + progressive[:-2] * 20 + b"\xff\xd9") == 10


def test_daemon_refuses_a_bad_reference_at_start(tmp_path: Path, cli_env: dict[str, str]
                                                 ) -> None:
    import subprocess

    from tests.conftest import faceswap_cam_exe

    bad = tmp_path / "tiny.png"
    bad.write_bytes(png(np.zeros((10, 10, 3), np.uint8)))
    result = subprocess.run([faceswap_cam_exe(), "run", "--source", "demo", "--sink", "null",
                             "--reference", str(bad), "--duration", "1"], env=cli_env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "too small (10x10)" in result.stderr
