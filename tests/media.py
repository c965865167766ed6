"""Test clips made at test time: each frame carries its index as blocks and a red patch.

The blocks survive lossy codecs, so a recording can be read back to check frame order, and
the red patch checks that no BGR/RGB swap happens anywhere (red stays red, or becomes cyan
when the debug engine inverts it).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

BITS = 10
BLOCK = 16
RED_BGR = (0, 0, 255)
CYAN_BGR = (255, 255, 0)
PATCH = (slice(180, 220), slice(250, 300))  # rows, cols inside a 320x240 frame


def make_frame(index: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    width, height = size
    frame = np.full((height, width, 3), 128, np.uint8)
    # A white reference block first: if it reads dark, the frame was inverted.
    frame[8:8 + BLOCK, 8:8 + BLOCK] = 255
    for bit in range(BITS):
        x = 8 + (bit + 1) * (BLOCK + 4)
        value = 255 if (index >> bit) & 1 else 0
        frame[8:8 + BLOCK, x:x + BLOCK] = value
    frame[PATCH] = RED_BGR
    return frame


def read_frame(frame: np.ndarray) -> tuple[int, bool]:
    """(index, inverted) decoded from a frame made by :func:`make_frame`."""
    def level(x: int) -> float:
        return float(frame[8 + 4:8 + BLOCK - 4, x + 4:x + BLOCK - 4].mean())

    inverted = level(8) < 128
    index = 0
    for bit in range(BITS):
        bright = level(8 + (bit + 1) * (BLOCK + 4)) > 128
        if bright != inverted:
            index |= 1 << bit
    return index, inverted


def patch_colour(frame: np.ndarray) -> tuple[int, int, int]:
    b, g, r = frame[PATCH].reshape(-1, 3).mean(axis=0)
    return round(b), round(g), round(r)


def near(colour: tuple[int, int, int], expected: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(colour, expected, strict=True))


def write_clip(path: Path, frames: int, fps: float = 15, size: tuple[int, int] = (320, 240)
               ) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for index in range(frames):
        writer.write(make_frame(index, size))
    writer.release()
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames (BGR) and the fps of a recording, read as the product reads clips."""
    from faceswap_cam.models.render import read_clip

    return read_clip(path)
