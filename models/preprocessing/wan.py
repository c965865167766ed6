"""Wan-Animate's preprocessing, live, one batch at a time.

Per frame, following Wan-Animate's own recipe: the largest person (RT-DETR), whole-body
133-keypoint pose (ViTPose) drawn as the skeleton video it was trained on, a face crop from the
face keypoints, and in replace mode a SAM2 person mask (streaming session, memory carried
across batches; or the detector's box, ``--person-mask box``), dilated and boxed, with
background = frame x (1 - mask). Boxes and face crops are smoothed over time so the
conditioning does not jitter.

When any frame of a batch has no person or no face (empty room, user walks away), the batch
is reported as empty: the engine passes it through and every temporal state restarts.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceswap_cam.models import defaults
from faceswap_cam.models.batching import generation_size
from faceswap_cam.models.preprocessing.base import PreprocessedBatch, Window, crop
from faceswap_cam.models.preprocessing.face import FaceCropper, face_box
from faceswap_cam.models.preprocessing.person import Box, BoxSmoother, PersonDetector
from faceswap_cam.models.preprocessing.pose import Keypoints, WholeBodyPoseEstimator, draw_skeleton
from faceswap_cam.models.preprocessing.segmentation import (
    WAN_DILATE_PX,
    PersonMasker,
    prompt_from_keypoints,
    wan_mask,
)
from faceswap_cam.models.wan.compositing import background

logger = logging.getLogger(__name__)


class WanPreprocessor:
    """Detector + pose + face crops (+ person masks) behind the engine's Preprocessor seam.

    Replace mode's person mask (``person_mask``): ``sam2`` is Wan's recipe, SAM2's tracked
    person prompted by body keypoints; ``box`` is the detector's person box. Wan dilates either
    and fills it to its bounding box (:func:`~.segmentation.wan_mask`), so both give Wan a box
    around the person; ``box`` takes it from the detector, which has run anyway, instead of
    from SAM2, most of the preprocessing's work (benchmarks/preprocess.py).
    """

    def __init__(self, detector: Any, pose: Any, masker: Any | None, *,
                 keypoint_threshold: float = 0.3,
                 person_mask: str = defaults.PERSON_MASK) -> None:
        self.keypoint_threshold = keypoint_threshold
        self.detector = detector
        self.pose = pose
        self.masker = masker
        self.person_mask = defaults.PersonMask(person_mask)
        self._person = BoxSmoother()
        self._face = FaceCropper()
        #: Stage timings of the last batch in seconds (benchmarks and the stats overlay).
        self.timings: dict[str, float] = {}
        self._locate_timings: dict[str, float] = {"resize": 0.0, "detector": 0.0}
        #: The frames :meth:`locate` last looked at, each with the detector's own box for it
        #: (frame pixels, unsteadied; None where it found nobody), until :meth:`process`.
        #: Weak references: the frames are the caller's (shared-memory views on the engine
        #: host), and holding them would keep a whole segment mapped.
        self._detected: list[tuple[weakref.ref[np.ndarray], Box | None]] = []

    @classmethod
    def load(cls, *, detector_model: str | Path, pose_model: str | Path,
             sam2_model: str | Path | None, device: str = "auto",
             keypoint_threshold: float = 0.3,
             person_mask: str = defaults.PERSON_MASK) -> WanPreprocessor:
        """Load the models from local folders or downloaded repo ids (SAM2 only when
        ``sam2_model`` is given)."""
        from faceswap_cam.models.wan.loading import pick_device, resolve_model_path

        resolved = pick_device(device)
        detector = PersonDetector(str(resolve_model_path(detector_model, "detector")),
                                  device=resolved)
        pose = WholeBodyPoseEstimator(pose_folder(resolve_model_path(pose_model, "pose")),
                                      device=resolved)
        masker = None if sam2_model is None else PersonMasker(
            resolve_model_path(sam2_model, "sam2"), device=resolved)
        return cls(detector, pose, masker, keypoint_threshold=keypoint_threshold,
                   person_mask=person_mask)

    def reset(self) -> None:
        self._person.reset()
        self._face.reset()
        if self.masker is not None:
            self.masker.reset()

    def locate(self, frames: Sequence[np.ndarray], *, size: tuple[int, int]
               ) -> list[Box | None]:
        """The largest person's box in each BGR frame, in frame pixels, steadied over time;
        None where the detector finds nobody (after a short hold). The detector looks at the
        frames scaled to ``size`` (the whole frame's generation size): it scales every image
        to its own input size anyway, and a small copy costs less to hand it. The copy is
        bilinear, as the detector's own resizing is: the area average the conditioning is
        made with costs about 2.3 ms a 720p frame at this ratio, against 0.3 ms, and the
        default person window makes its conditioning from a crop anyway."""
        clock = time.perf_counter
        start = clock()
        height, width = frames[0].shape[:2] if frames else (0, 0)
        small_w, small_h = size
        small = [cv2.cvtColor(cv2.resize(f, (small_w, small_h), interpolation=cv2.INTER_LINEAR),
                              cv2.COLOR_BGR2RGB) for f in frames]
        self._locate_timings = {"resize": clock() - start}
        start = clock()
        sx, sy = width / max(small_w, 1), height / max(small_h, 1)
        detected = [None if box is None else
                    Box(box.x0 * sx, box.y0 * sy, box.x1 * sx, box.y1 * sy)
                    for box in self.detector.detect(small)]
        self._detected = [(weakref.ref(frame), box)
                          for frame, box in zip(frames, detected, strict=True)]
        boxes = [self._person.update(box) for box in detected]
        self._locate_timings["detector"] = clock() - start
        return boxes

    def process(self, frames: Sequence[np.ndarray], *, size: tuple[int, int], face_size: int,
                with_background: bool, window: Window | None = None,
                people: Sequence[Box | None] | None = None) -> PreprocessedBatch:
        width, height = size
        clock = time.perf_counter
        frame_h, frame_w = frames[0].shape[:2]
        if people is None:
            # The detector looks at the whole frame, at its own generation size.
            people = self.locate(frames, size=generation_size((frame_w, frame_h), min(size))
                                 if window is not None else size)
        timings = dict(self._locate_timings)
        # Taken: a later batch is matched against its own locate().
        located, self._detected = self._detected, []
        if any(box is None for box in people):
            return self._nobody("no person in view", timings)
        start = clock()
        left, top, crop_w, crop_h = window or (0, 0, frame_w, frame_h)
        small = [cv2.cvtColor(cv2.resize(crop(f, window), (width, height),
                                         interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
                 for f in frames]
        timings["resize"] += clock() - start
        # Generation pixels per frame pixel, and the window's corner in the frame.
        sx, sy = width / crop_w, height / crop_h

        def generation_box(box: Box) -> Box:
            return Box((box.x0 - left) * sx, (box.y0 - top) * sy,
                       (box.x1 - left) * sx, (box.y1 - top) * sy).clip(size)

        boxes = [None if box is None else generation_box(box) for box in people]

        start = clock()
        keypoints: list[Keypoints | None] = self.pose.estimate(
            small, [_xyxy(box) for box in boxes])
        timings["pose"] = clock() - start

        start = clock()
        faces = []
        for frame, points in zip(frames, keypoints, strict=True):
            face = None
            if points is not None:
                # Crop from the full-resolution camera frame: the face gets every pixel.
                full = points.scaled(1 / sx, 1 / sy, offset=(left, top))
                box = face_box(full.xy, full.scores, (frame.shape[1], frame.shape[0]),
                               score_threshold=self.keypoint_threshold)
                steady = self._face.update(box)
                if steady is not None:
                    # Cropping and resizing treat the channels alike: the crop, not the
                    # whole frame, is turned to RGB.
                    face = cv2.cvtColor(self._face.crop(frame, steady, face_size),
                                        cv2.COLOR_BGR2RGB)
            faces.append(face)
        timings["face"] = clock() - start
        if any(face is None for face in faces):
            return self._nobody("no face in view", timings)

        start = clock()
        pose = [draw_skeleton(points, size) for points in keypoints]
        timings["skeleton"] = clock() - start
        batch = PreprocessedBatch(pose=pose, face=[f for f in faces if f is not None])
        if with_background:
            start = clock()
            masks = self._person_masks(
                small, keypoints, [generation_box(box) for box in
                                   self._mask_boxes(frames, people, located) if box is not None],
                size)
            batch.mask = masks
            batch.background = [background(frame, mask) for frame, mask in zip(small, masks,
                                                                                strict=True)]
            timings["mask"] = clock() - start
        self.timings = timings
        return batch

    def _mask_boxes(self, frames: Sequence[np.ndarray], people: Sequence[Box | None],
                    located: Sequence[tuple[weakref.ref[np.ndarray], Box | None]]
                    ) -> list[Box | None]:
        """The box a ``box`` person mask covers on each frame (frame pixels): the steadied box
        and, on the frames :meth:`locate` last looked at, the detector's own box for that frame
        as well. The steadied box trails a moving person (by design: crops made from it must
        not jitter), and a mask must cover where the person is now, or their edge stays in the
        background Wan is given and in the camera pixels around the swapped person."""
        detected = [next((box for seen, box in located if seen() is frame), None)
                    for frame in frames]
        return [person if person is None or box is None else person.union(box)
                for person, box in zip(people, detected, strict=True)]

    def _person_masks(self, small: Sequence[np.ndarray], keypoints: Sequence[Keypoints | None],
                      boxes: Sequence[Box], size: tuple[int, int]) -> list[np.ndarray]:
        """Wan's mask of the person on each generation-size frame: dilated, filled to its box.
        ``boxes`` (generation pixels) are the ``box`` mask's; SAM2 is prompted by keypoints."""
        if self.person_mask == defaults.PersonMask.BOX:
            # What wan_mask makes of a box, without its image operations (about 2 ms a
            # frame): dilating a filled box grows its sides.
            return [box_mask(box, size, grow=WAN_DILATE_PX) for box in boxes]
        if self.masker is None:
            raise RuntimeError("replace mode's sam2 person mask needs the SAM2 model "
                               "(--sam2-model), or use --person-mask box")
        prompts = [None if p is None else prompt_from_keypoints(
            p.xy, p.scores, threshold=self.keypoint_threshold, frame_size=size)
            for p in keypoints]
        return [wan_mask(m) for m in self.masker.masks(small, prompts)]

    def _nobody(self, why: str, timings: dict[str, float]) -> PreprocessedBatch:
        logger.debug("batch passes through: %s", why)
        self.timings = timings
        self.reset()
        return PreprocessedBatch(pose=[], face=[], present=False)


def pose_folder(path: Path) -> Path:
    """A transformers folder for the pose model: ``path`` itself, or, for the downloaded
    original ViTPose checkpoint, the folder it is converted into once (offline)."""
    if (path / "config.json").is_file():
        return path
    checkpoints = sorted(path.rglob("*.pth")) if path.is_dir() else (
        [path] if path.suffix == ".pth" else [])
    if not checkpoints:
        return path  # let the estimator say what is wrong with it
    converted = (path if path.is_dir() else path.parent) / "transformers"
    if not (converted / "config.json").is_file():
        from faceswap_cam.models.preprocessing.pose import convert_mmpose_checkpoint

        logger.info("converting %s for transformers (once)", checkpoints[0])
        convert_mmpose_checkpoint(checkpoints[0], converted)
    return converted


def _xyxy(box: Box | None) -> tuple[float, float, float, float] | None:
    return None if box is None else (box.x0, box.y0, box.x1, box.y1)


def box_mask(box: Box | None, size: tuple[int, int], *, grow: int = 0) -> np.ndarray:
    """A uint8 mask (H, W) of ``size`` (W, H), 255 on the pixels ``box`` covers inside the
    frame (any pixel it reaches into) and ``grow`` pixels around them, 0 elsewhere: what
    ``wan_mask`` makes of the box's pixels with ``dilate_px=grow``. All 0 for no box, or one
    with no pixel inside the frame."""
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    if box is None:
        return mask
    x0, y0 = max(0, math.floor(box.x0)), max(0, math.floor(box.y0))
    x1, y1 = min(width, math.ceil(box.x1)), min(height, math.ceil(box.y1))
    if x1 > x0 and y1 > y0:  # else nothing inside (and a negative end would wrap a slice)
        mask[max(0, y0 - grow):min(height, y1 + grow),
             max(0, x0 - grow):min(width, x1 + grow)] = 255
    return mask
