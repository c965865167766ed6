"""The seam between raw camera frames and what Wan-Animate is conditioned on.

Wan-Animate does not take camera frames: it takes a skeleton (pose) video, face crops, and in
replace mode a background video and a person mask. A :class:`Preprocessor` makes those from a
batch of BGR frames. The real one (person detector, whole-body pose, SAM2 masks) is its own
piece of work; :class:`StandInPreprocessor` fills the seam with cheap image operations so the
engine and the daemon can run end to end, and tests can drive them, without those models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from faceswap_cam.models.preprocessing.person import Box


@dataclass
class PreprocessedBatch:
    """Per-frame conditioning, RGB uint8: ``pose`` and ``background`` at the generation size,
    ``face`` square at the model's face size, ``mask`` single-channel (255 = person)."""

    pose: list[np.ndarray]
    face: list[np.ndarray]
    background: list[np.ndarray] | None = None
    mask: list[np.ndarray] | None = None
    #: False when the batch has nobody to swap: the engine passes the frames through.
    present: bool = True

    def __len__(self) -> int:
        return len(self.pose)


#: ``(x, y, width, height)`` in camera-frame pixels: the part of the frames a batch is
#: conditioned on (see models/wan/window.py).
Window = tuple[int, int, int, int]


def crop(frame: np.ndarray, window: Window | None) -> np.ndarray:
    """The window's part of ``frame`` (a view), or the frame itself for None."""
    if window is None:
        return frame
    x, y, width, height = window
    return frame[y:y + height, x:x + width]


class Preprocessor(Protocol):
    def locate(self, frames: Sequence[np.ndarray], *, size: tuple[int, int]
               ) -> list[Box | None]:
        """The person's box in each BGR frame (frame pixels, steadied over time), None where
        nobody is: what the engine places its generation window around. ``size`` is the
        whole frame's generation size (W, H), the scale a model may look at."""

    def process(self, frames: Sequence[np.ndarray], *, size: tuple[int, int], face_size: int,
                with_background: bool, window: Window | None = None,
                people: Sequence[Box | None] | None = None) -> PreprocessedBatch:
        """Conditioning for BGR ``frames`` at generation ``size`` (W, H), made from the
        ``window`` part of each frame (None: all of it). ``people`` are :meth:`locate`'s
        boxes for these frames, when the caller has them (the detector does not run twice)."""

    def reset(self) -> None:
        """Forget temporal state (smoothing, tracking) when the stream restarts."""


class StandInPreprocessor:
    """Not a person model: edges for the pose, the centre square for the face, a central
    ellipse as the person mask (and its box as the person's). Deterministic per frame, so
    streaming and offline runs of the same frames see the same conditioning."""

    def locate(self, frames: Sequence[np.ndarray], *, size: tuple[int, int]
               ) -> list[Box | None]:
        boxes: list[Box | None] = []
        for frame in frames:
            height, width = frame.shape[:2]
            boxes.append(Box(width / 4, height / 10, width * 3 / 4, height * 9 / 10))
        return boxes

    def process(self, frames: Sequence[np.ndarray], *, size: tuple[int, int], face_size: int,
                with_background: bool, window: Window | None = None,
                people: Sequence[Box | None] | None = None) -> PreprocessedBatch:
        width, height = size
        pose, face, background, mask = [], [], [], []
        ellipse = np.zeros((height, width), np.uint8)
        axes = (max(1, width // 4), max(1, height * 2 // 5))
        cv2.ellipse(ellipse, (width // 2, height // 2), axes, 0, 0, 360, 255, -1)
        for frame in (crop(f, window) for f in frames):
            rgb = cv2.cvtColor(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA),
                               cv2.COLOR_BGR2RGB)
            edges = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 60, 120)
            pose.append(cv2.cvtColor(edges, cv2.COLOR_GRAY2RGB))
            h, w = frame.shape[:2]
            side = min(h, w) // 2
            y, x = (h - side) // 2, (w - side) // 2
            centre = frame[y:y + side, x:x + side]
            face.append(cv2.cvtColor(cv2.resize(centre, (face_size, face_size)),
                                     cv2.COLOR_BGR2RGB))
            if with_background:
                background.append(rgb * (1 - ellipse[..., None] // 255))
                mask.append(ellipse.copy())
        if not with_background:
            return PreprocessedBatch(pose, face)
        return PreprocessedBatch(pose, face, background, mask)

    def reset(self) -> None:
        pass
