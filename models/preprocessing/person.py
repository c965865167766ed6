"""Finding the person in each camera frame, and keeping that box steady over time.

Wan-Animate's own preprocessing (Wan2.2, ``wan/modules/animate/preprocess/pose2d.py``) runs a
YOLO person detector and keeps the largest person box per frame before whole-body pose. We
do the same with an RT-DETR detector loaded through transformers, so no ONNX runtime or extra
weights format is needed: one batched forward per batch of frames.

torch and transformers are imported inside :class:`PersonDetector` only, so the geometry
(:class:`Box`, :class:`BoxSmoother`, :func:`largest_person`) stays usable without them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceswap_cam.models import defaults
from faceswap_cam.models.preprocessing.precision import tf32_matmuls

logger = logging.getLogger(__name__)

PERSON_LABEL = "person"


class DetectorError(RuntimeError):
    """The detector cannot be used (no weights, no "person" class); the message says why."""


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates, ``x1``/``y1`` exclusive like a slice."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def from_center(cls, cx: float, cy: float, width: float, height: float) -> Box:
        return cls(cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def is_finite(self) -> bool:
        return all(map(math.isfinite, (self.x0, self.y0, self.x1, self.y1)))

    @property
    def is_empty(self) -> bool:
        return not (self.width > 0 and self.height > 0)

    def as_int(self) -> tuple[int, int, int, int]:
        """Whole pixels: the corner rounded, the size rounded separately, so a square box
        stays square (rounding both corners can make the sides differ by one)."""
        x0, y0 = math.floor(self.x0 + 0.5), math.floor(self.y0 + 0.5)
        return x0, y0, x0 + max(1, round(self.width)), y0 + max(1, round(self.height))

    def expand(self, scale: float, scale_y: float | None = None) -> Box:
        """Sides multiplied by ``scale`` (``scale_y`` for the height if given), same centre."""
        cx, cy = self.center
        sy = scale if scale_y is None else scale_y
        return Box.from_center(cx, cy, self.width * scale, self.height * sy)

    def square(self) -> Box:
        """The square of the same area and centre."""
        side = math.sqrt(self.area)
        return Box.from_center(*self.center, side, side)

    def union(self, other: Box) -> Box:
        """The smallest box holding both."""
        return Box(min(self.x0, other.x0), min(self.y0, other.y0),
                   max(self.x1, other.x1), max(self.y1, other.y1))

    def clip(self, frame_size: tuple[int, int]) -> Box:
        """Cut to the frame (``frame_size`` is width, height); may become empty."""
        w, h = frame_size
        return Box(min(max(self.x0, 0.0), w), min(max(self.y0, 0.0), h),
                   min(max(self.x1, 0.0), w), min(max(self.y1, 0.0), h))

    def shift_inside(self, frame_size: tuple[int, int]) -> Box:
        """Moved (not resized) to lie inside the frame; a side longer than the frame is
        shrunk to it about the centre, the only case where the size changes."""
        w, h = frame_size
        bw, bh = min(self.width, float(w)), min(self.height, float(h))
        cx, cy = self.center
        cx = min(max(cx, bw / 2), w - bw / 2)
        cy = min(max(cy, bh / 2), h - bh / 2)
        return Box.from_center(cx, cy, bw, bh)


def person_label_ids(id2label: Mapping[Any, str]) -> list[int]:
    """The class ids named "person"; a detector without one cannot do this job at all."""
    ids = sorted(int(i) for i, name in id2label.items()
                 if str(name).strip().lower() == PERSON_LABEL)
    if not ids:
        sample = ", ".join(repr(n) for n in list(id2label.values())[:8])
        raise DetectorError(f"the detector has no {PERSON_LABEL!r} class (its labels: {sample}"
                            f"{', ...' if len(id2label) > 8 else ''}); use a COCO-trained "
                            f"detector such as {defaults.DETECTOR_REPO}")
    return ids


def largest_person(scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray,
                   person_ids: Iterable[int], *, threshold: float,
                   frame_size: tuple[int, int] | None = None) -> Box | None:
    """The largest-area person box of one frame's detections, or None.

    ``boxes`` are (N, 4) xyxy pixels as post-processing gives them. They are clipped to the
    frame first when ``frame_size`` (width, height) is given, because a DETR box can reach
    past the border and the part outside must not win on area. Largest area is Wan's own
    choice (``select_type='max'`` in pose2d.py): in a webcam the user is the nearest person.
    """
    wanted = set(person_ids)
    best: Box | None = None
    for score, label, xyxy in zip(scores.tolist(), labels.tolist(), boxes.tolist(),
                                  strict=True):
        if int(label) not in wanted or not score >= threshold:
            continue
        box = Box(*(float(v) for v in xyxy))
        if frame_size is not None:
            box = box.clip(frame_size)
        if box.is_empty or not box.is_finite:
            continue
        if best is None or box.area > best.area:
            best = box
    return best


def _uses_torch_backend(processor: Any) -> bool:
    """Whether the image processor works on torch tensors (and so can run on the GPU); the
    PIL/numpy ("slow") ones would only warn about an unknown ``device`` argument."""
    names = {cls.__name__ for cls in type(processor).__mro__}
    return bool(names & {"TorchvisionBackend", "BaseImageProcessorFast"})


class PersonDetector:
    """The largest person per frame from an RT-DETR (v1 or v2) detector in transformers."""

    def __init__(self, model: str = defaults.DETECTOR_REPO, *, device: str = "auto",
                 dtype: str = "fp32", threshold: float = 0.5,
                 local_files_only: bool = True) -> None:
        import torch
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForObjectDetection

        from faceswap_cam.models.wan.loading import pick_device, pick_dtype

        self.threshold = threshold
        self.device = pick_device(device)
        # fp32 by default: a 20M-parameter detector costs little next to the 14B video
        # model, and half precision would nudge scores that sit near the threshold. On a GPU
        # its products run on TF32 tensor cores, as Wan's recipe runs it (precision.py).
        self.dtype = pick_dtype(dtype, self.device)
        try:
            config = AutoConfig.from_pretrained(model, local_files_only=local_files_only)
        except OSError as exc:
            raise DetectorError(f"person detector {model!r} not found locally ({exc}); "
                                f"download it first, e.g. `hf download {model}`") from exc
        # Checked on the config, before the weights load, so a wrong model fails at once.
        self.person_ids = person_label_ids(config.id2label)
        # transformers' Auto* classes are untyped; hold them as Any rather than silence mypy.
        processor_class: Any = AutoImageProcessor
        model_class: Any = AutoModelForObjectDetection
        self.processor: Any = processor_class.from_pretrained(
            model, local_files_only=local_files_only)
        self.model: Any = model_class.from_pretrained(
            model, config=config, local_files_only=local_files_only, dtype=self.dtype)
        self.model.to(self.device).eval()
        self._use_focal_loss = bool(getattr(config, "use_focal_loss", True))
        self._processor_on_device = _uses_torch_backend(self.processor)
        self._torch: Any = torch
        logger.info("person detector %s on %s (%s), person ids %s", model, self.device,
                    self.dtype, self.person_ids)

    def detect(self, frames_rgb: Sequence[np.ndarray]) -> list[Box | None]:
        """The largest person box (frame pixels) of each RGB frame, None where none."""
        return [largest_person(scores, labels, boxes, self.person_ids,
                               threshold=self.threshold, frame_size=size)
                for size, (scores, labels, boxes) in self._detections(frames_rgb)]

    def count_people(self, frame_rgb: np.ndarray, *, min_area: float = 0.02) -> int:
        """People in one image, ignoring boxes under ``min_area`` of it (a face on a poster in
        the background should not make a portrait "two people")."""
        ((width, height), (scores, labels, boxes)), = self._detections([frame_rgb])
        wanted = set(self.person_ids)
        count = 0
        for score, label, xyxy in zip(scores.tolist(), labels.tolist(), boxes.tolist(),
                                      strict=True):
            box = Box(*(float(v) for v in xyxy)).clip((width, height))
            if (int(label) in wanted and score >= self.threshold
                    and box.area >= min_area * width * height):
                count += 1
        return count

    def _detections(self, frames_rgb: Sequence[np.ndarray]
                    ) -> list[tuple[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """Per frame: ((width, height), (scores, labels, xyxy boxes)), one batched forward."""
        if not frames_rgb:
            return []
        torch = self._torch
        extra: dict[str, Any] = {"device": self.device} if self._processor_on_device else {}
        inputs = self.processor(images=list(frames_rgb), return_tensors="pt", **extra)
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        sizes = [(int(f.shape[0]), int(f.shape[1])) for f in frames_rgb]
        with torch.inference_mode(), tf32_matmuls(self.device):
            outputs = self.model(pixel_values=pixel_values)
            results = self.processor.post_process_object_detection(
                outputs, threshold=self.threshold, target_sizes=sizes,
                use_focal_loss=self._use_focal_loss)
        return [((w, h), (result["scores"].float().cpu().numpy(),
                          result["labels"].cpu().numpy(),
                          result["boxes"].float().cpu().numpy()))
                for (h, w), result in zip(sizes, results, strict=True)]


class BoxSmoother:
    """Steadies a per-frame box so crops made from it do not jitter.

    The box is kept as centre and size. A new box that differs from the held one by less
    than ``dead_band`` (a fraction of the held box's size) is ignored: detector noise is
    that small, and following it is what makes a crop shimmer. A larger difference is
    followed by exponential smoothing (``alpha`` of the way per frame), and one beyond
    ``snap`` (also a fraction of the size) is taken at once: that is a different person or
    a cut, and sliding across the frame to it would look worse than a jump. A missing box
    holds the last one for ``hold`` frames (a blink of the detector), then gives None.
    """

    def __init__(self, *, alpha: float = 0.5, dead_band: float = 0.04, snap: float = 1.0,
                 hold: int = 5) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha, self.dead_band, self.snap, self.hold = alpha, dead_band, snap, hold
        self._state: np.ndarray | None = None  # cx, cy, w, h
        self._missed = 0

    @property
    def box(self) -> Box | None:
        if self._state is None:
            return None
        cx, cy, w, h = (float(v) for v in self._state)
        return Box.from_center(cx, cy, w, h)

    def reset(self) -> None:
        self._state = None
        self._missed = 0

    def update(self, box: Box | None) -> Box | None:
        """Feed this frame's box (None = not found); returns the box to use this frame."""
        if box is None or box.is_empty:
            self._missed += 1
            if self._missed > self.hold:
                self._state = None
            return self.box
        self._missed = 0
        new = np.array([*box.center, box.width, box.height], np.float64)
        if self._state is None:
            self._state = new
            return self.box
        size = max(self._state[2], self._state[3], 1e-6)
        diff = new - self._state
        moved = float(np.max(np.abs(diff))) / size
        if moved > self.snap:
            self._state = new
        elif moved > self.dead_band:
            self._state = self._state + self.alpha * diff
        return self.box
