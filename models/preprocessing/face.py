"""The face crop Wan-Animate is conditioned on, cut from whole-body keypoints.

Wan-Animate's preprocessing (Wan2.2, ``wan/modules/animate/preprocess/utils.py``,
``get_face_bboxes``, called from ``process_pipepline.py`` with ``scale=1.3``) builds the face
box from the 68 face points of COCO-WholeBody (indices 23-90) like this:

* the tight box of the points, ``w x h``;
* its AREA times 1.3 with the aspect kept: ``w' = w*sqrt(1.3)``, ``h' = h*sqrt(1.3)``;
* widened by ``(w'-w)/2`` on the left and on the right; heightened unevenly, ``3/4`` of
  ``h'-h`` above and ``1/4`` below, because the 68 points stop at the eyebrows and the
  forehead is above them;
* clipped to the frame by cutting (not moving), truncated to ints, and resized to 512x512,
  stretched if not square. Scores are not looked at.

:func:`face_box` computes exactly that box (``square=False``), or by default the square of
the same area and centre, moved (not cut) to stay in the frame, so the crop keeps the face's
proportions and does not jump in scale at the frame edge; where it still leaves the frame,
:meth:`FaceCropper.crop` pads black.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from faceswap_cam.models.preprocessing.person import Box, BoxSmoother

logger = logging.getLogger(__name__)

FACE_POINTS = slice(23, 91)  # COCO-WholeBody: the 68 face landmarks
NUM_WHOLEBODY_POINTS = 133
WAN_FACE_AREA_SCALE = 1.3
WAN_FACE_SIZE = 512


def face_box(keypoints_xy: np.ndarray, scores: np.ndarray | None,
             frame_size: tuple[int, int], *, area_scale: float = WAN_FACE_AREA_SCALE,
             score_threshold: float = 0.3, min_points: int = 10,
             square: bool = True) -> Box | None:
    """The face box of one person from COCO-WholeBody keypoints, or None.

    ``keypoints_xy`` is (133, 2) in pixels, ``scores`` (133,) (None: trust every point, as
    Wan does), ``frame_size`` is (width, height). Points under ``score_threshold`` are left
    out, because a pose model still places the landmarks of a hidden or turned-away face
    somewhere, and one stray point would double the box; with fewer than ``min_points``
    left there is no face worth cropping.
    """
    points = np.asarray(keypoints_xy, np.float64)
    if points.shape != (NUM_WHOLEBODY_POINTS, 2):
        raise ValueError(f"keypoints_xy must be ({NUM_WHOLEBODY_POINTS}, 2), got {points.shape}")
    face = points[FACE_POINTS]
    keep = np.all(np.isfinite(face), axis=1)
    if scores is not None:
        face_scores = np.asarray(scores, np.float64).reshape(-1)[FACE_POINTS]
        keep &= face_scores >= score_threshold
    face = face[keep]
    if len(face) < max(min_points, 2):
        return None
    min_x, min_y = face.min(axis=0)
    max_x, max_y = face.max(axis=0)
    width, height = max_x - min_x, max_y - min_y
    if width <= 0 or height <= 0:
        return None
    grow = math.sqrt(area_scale)
    dx = (width * grow - width) / 2
    dy = (height * grow - height) / 4
    wan = Box(min_x - dx, min_y - 3 * dy, max_x + dx, max_y + dy)
    if not square:
        return wan.clip(frame_size)
    side = math.sqrt(wan.area)
    return Box.from_center(*wan.center, side, side).shift_inside(frame_size)


def crop_resized(frame: np.ndarray, box: Box, size: int) -> np.ndarray:
    """``box`` of ``frame`` resized to ``size`` x ``size``, black where it leaves the frame.

    Bilinear, as Wan's ``cv2.resize`` default, so the face encoder sees the resampling it
    was trained on; a box that is not square is stretched, as Wan does.
    """
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box.as_int()
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix0 >= ix1 or iy0 >= iy1:
        return np.zeros((size, size, *frame.shape[2:]), frame.dtype)
    region = frame[iy0:iy1, ix0:ix1]
    if (ix0, iy0, ix1, iy1) != (x0, y0, x1, y1):
        region = cv2.copyMakeBorder(region, iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1,
                                    cv2.BORDER_CONSTANT, value=0)
    resized: np.ndarray = cv2.resize(region, (size, size), interpolation=cv2.INTER_LINEAR)
    return resized


class FaceCropper:
    """Face crops that hold still: the per-frame face box goes through a :class:`BoxSmoother`
    (landmarks wobble a few pixels from frame to frame even on a still face, and a crop that
    follows them makes the generated face swim), then is cut and resized.
    """

    def __init__(self, size: int = WAN_FACE_SIZE, *, smoother: BoxSmoother | None = None) -> None:
        self.size = size
        self.smoother = smoother or BoxSmoother(alpha=0.5, dead_band=0.03, snap=1.0, hold=5)

    def update(self, box: Box | None) -> Box | None:
        """This frame's face box (None = not found) in, the steadied box to crop out."""
        return self.smoother.update(box)

    def crop(self, frame: np.ndarray, box: Box, size: int | None = None) -> np.ndarray:
        """``size`` x ``size`` of ``frame`` (default this cropper's size), its channels in
        their order, black outside the frame."""
        return crop_resized(frame, box, self.size if size is None else size)

    def __call__(self, frame_rgb: np.ndarray, box: Box | None) -> np.ndarray | None:
        """Steady ``box`` and crop it; None while there is no face (after the hold)."""
        steady = self.update(box)
        return None if steady is None else self.crop(frame_rgb, steady)

    def reset(self) -> None:
        self.smoother.reset()
