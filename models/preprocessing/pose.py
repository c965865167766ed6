"""Whole-body pose: ViTPose keypoints in, Wan-Animate's skeleton frames out.

Wan-Animate is conditioned on a pose video that its own preprocessing draws
(``wan/modules/animate/preprocess`` in Wan-Video/Wan2.2): a top-down ViTPose-H whole-body
model gives the 133 COCO-WholeBody keypoints of one person per frame, ``pose2d_utils.py``
folds them into a 20-point OpenPose-like body plus two 21-point hands, and
``human_visualization.draw_aapose_new`` draws those on black. The model learned that exact
picture (limb order, colours, widths), so :func:`draw_skeleton` reproduces it rather than
drawing "a" skeleton. The 68 face points are not drawn: Wan-Animate sees the face through
its face crops, which those points locate.

Drawing is numpy/cv2 only. torch and transformers load inside :class:`WholeBodyPoseEstimator`,
so the daemon can import this module without the model stack.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceswap_cam.models import defaults
from faceswap_cam.models.preprocessing.precision import tf32_matmuls

logger = logging.getLogger(__name__)

# Transformers-format ViTPose checkpoints with a 133-keypoint head: none is published. Every
# usyd-community ViTPose/ViTPose++ conversion keeps only the 17-keypoint COCO head (its
# conversion script hard-codes num_labels=17 and drops ViTPose++'s per-dataset
# ``associate_heads``, which is where the COCO-WholeBody head lives), so ``dataset_index=5``
# only switches the backbone's expert, never the head. The network Wan-Animate's
# preprocessing runs (ViTPose-H trained on COCO-WholeBody, 256x192, ``vitpose_h_wholebody``)
# is public only in mmpose format; ``defaults.POSE_REPO`` hosts it (``defaults.POSE_FILE``), and
# :func:`convert_mmpose_checkpoint` turns that file into a folder :class:`WholeBodyPoseEstimator`
# loads.

NUM_KEYPOINTS = 133
# COCO-WholeBody index ranges (body 17, feet 6, face 68, left hand 21, right hand 21).
BODY = slice(0, 17)
FEET = slice(17, 23)
FACE = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)

# ViTPose++ routes each sample through one expert per training set; 5 is COCO-WholeBody
# (transformers' ViTPose docs: COCO 0, AiC 1, MPII 2, AP-10K 3, APT-36K 4, COCO-WholeBody 5).
WHOLEBODY_DATASET_INDEX = 5

# Wan-Animate's default score threshold (draw_aapose_by_meta_new, threshold=0.5): a limb or
# joint is drawn when its keypoints score at least this.
SCORE_THRESHOLD = 0.5

# The 20-point body Wan-Animate draws, as pairs of COCO-WholeBody indices averaged together
# (split_kp2ds_for_aa): nose, neck (mid-shoulders), R shoulder/elbow/wrist, L shoulder/elbow/
# wrist, R hip/knee/ankle, L hip/knee/ankle, R eye, L eye, R ear, L ear, L toe (mid big and
# small toe), R toe. The score is averaged too, so the neck needs both shoulders.
_WAN_BODY_A = (0, 6, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 17, 20)
_WAN_BODY_B = (0, 5, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 18, 21)
_WAN_HEAD = (0, 14, 15, 16, 17)  # nose, eyes, ears in the 20-point body

# Limbs between 20-point body indices, in Wan-Animate's order (its limbSeq, 0-based here);
# limb i takes colour i, and joint i takes colour i at full strength.
WAN_BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5),  # neck - shoulders
    (2, 3), (3, 4),  # right arm
    (5, 6), (6, 7),  # left arm
    (1, 8), (8, 9), (9, 10),  # right leg
    (1, 11), (11, 12), (12, 13),  # left leg
    (1, 0),  # neck - nose
    (0, 14), (14, 16), (0, 15), (15, 17),  # eyes, ears
    (13, 18), (10, 19),  # feet
)
WAN_BODY_COLOURS: tuple[tuple[int, int, int], ...] = (  # RGB: Wan draws on RGB frames
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
    (200, 200, 0), (100, 100, 0),
)
# Limbs are filled at 60 % of their colour, truncated as Wan does (int(c * 0.6)).
WAN_LIMB_COLOURS: tuple[tuple[int, ...], ...] = tuple(
    tuple(int(float(c) * 0.6) for c in colour) for colour in WAN_BODY_COLOURS[:len(WAN_BODY_LIMBS)]
)

# Hand bones, 21-point hand indices (wrist 0, then four per finger, thumb first).
WAN_HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (0 if joint == 0 else finger * 4 + joint, finger * 4 + joint + 1)
    for finger in range(5) for joint in range(4)
)
# Edge i is hsv(i / 20, 1, 1) * 255 (matplotlib), which cv2 rounds half to even.
WAN_HAND_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 77, 0), (255, 153, 0), (255, 229, 0), (204, 255, 0), (128, 255, 0),
    (51, 255, 0), (0, 255, 25), (0, 255, 102), (0, 255, 179), (0, 255, 255), (0, 178, 255),
    (0, 102, 255), (0, 25, 255), (51, 0, 255), (128, 0, 255), (204, 0, 255), (255, 0, 230),
    (255, 0, 153), (255, 0, 77),
)
WAN_HAND_POINT_COLOUR = (0, 0, 255)


class PoseModelError(ValueError):
    """The pose checkpoint cannot give what Wan-Animate needs; the message says what to use."""


@dataclass(frozen=True, eq=False)
class Keypoints:
    """One person's 133 COCO-WholeBody keypoints: ``xy`` in frame pixels, ``scores`` the
    heatmap peaks (about 0..1; Wan-Animate draws what scores at least 0.5)."""

    xy: np.ndarray  # (133, 2) float32
    scores: np.ndarray  # (133,) float32

    def __post_init__(self) -> None:
        xy = np.asarray(self.xy, dtype=np.float32)
        scores = np.asarray(self.scores, dtype=np.float32)
        if xy.shape != (NUM_KEYPOINTS, 2) or scores.shape != (NUM_KEYPOINTS,):
            raise ValueError(f"Keypoints need xy (133, 2) and scores (133,), "
                             f"got {xy.shape} and {scores.shape}")
        object.__setattr__(self, "xy", xy)
        object.__setattr__(self, "scores", scores)

    def part(self, indices: slice) -> np.ndarray:
        """``(n, 3)`` rows of x, y, score for one range, e.g. ``kp.part(FACE)``."""
        return np.concatenate([self.xy[indices], self.scores[indices, None]], axis=1)

    @property
    def body(self) -> np.ndarray:
        return self.part(BODY)

    @property
    def feet(self) -> np.ndarray:
        return self.part(FEET)

    @property
    def face(self) -> np.ndarray:
        return self.part(FACE)

    @property
    def left_hand(self) -> np.ndarray:
        return self.part(LEFT_HAND)

    @property
    def right_hand(self) -> np.ndarray:
        return self.part(RIGHT_HAND)

    def scaled(self, sx: float, sy: float, *, offset: tuple[float, float] = (0.0, 0.0)
               ) -> Keypoints:
        """The same pose in a frame resized by ``sx`` x ``sy``, then moved by ``offset`` (a
        crop's corner in the frame it was cut from)."""
        return Keypoints(self.xy * np.array([sx, sy], np.float32)
                         + np.array(offset, np.float32), self.scores.copy())


def wan_body(keypoints: Keypoints) -> np.ndarray:
    """The ``(20, 3)`` x, y, score body Wan-Animate draws (see ``_WAN_BODY_A``)."""
    rows = np.concatenate([keypoints.xy, keypoints.scores[:, None]], axis=1).astype(np.float64)
    return (rows[list(_WAN_BODY_A)] + rows[list(_WAN_BODY_B)]) / 2


def stick_widths(size: tuple[int, int]) -> tuple[int, int]:
    """Body and hand stroke widths for a (W, H) frame: Wan-Animate's "v2" widths, about a
    200th of the short side less one (1 px below 600 px), and half that for hands."""
    base = int(min(size) / 200)
    body = max(base - 1, 1)
    return body, max(body // 2, 1)


def draw_skeleton(keypoints: Keypoints | None, size: tuple[int, int], *,
                  score_threshold: float = SCORE_THRESHOLD, draw_hands: bool = True,
                  draw_head: bool = True) -> np.ndarray:
    """Wan-Animate's pose frame: RGB uint8 ``(H, W, 3)`` for ``size`` (W, H), black where
    nothing is drawn; all black for ``None`` (no person). ``keypoints`` are in pixels of a
    frame of this size (:meth:`Keypoints.scaled` maps them from the camera frame)."""
    width, height = size
    canvas = np.zeros((height, width, 3), np.uint8)
    if keypoints is None:
        return canvas
    body = wan_body(keypoints)
    visible = np.isfinite(body).all(axis=1) & (body[:, 2] >= score_threshold)
    if not draw_head:
        visible[list(_WAN_HEAD)] = False
    body_width, hand_width = stick_widths(size)

    for (a, b), colour in zip(WAN_BODY_LIMBS, WAN_LIMB_COLOURS, strict=True):
        if visible[a] and visible[b]:
            _fill_limb(canvas, body[a], body[b], body_width, colour)
    for point, colour, shown in zip(body, WAN_BODY_COLOURS, visible, strict=True):
        if shown:
            cv2.circle(canvas, (int(point[0]), int(point[1])), body_width, colour, thickness=-1)
    if draw_hands:
        for hand in (keypoints.left_hand, keypoints.right_hand):
            _draw_hand(canvas, hand, hand_width, score_threshold)
    return canvas


def _fill_limb(canvas: np.ndarray, p1: np.ndarray, p2: np.ndarray, width: int,
               colour: tuple[int, ...]) -> None:
    # An ellipse as long as the limb and `width` thick, with Wan's truncations (centre,
    # half-length and angle all go through int()), so pixels match its pose videos.
    cx, cy = (p1[0] + p2[0]) / 2, (p1[1] + p2[1]) / 2
    length = math.hypot(p1[0] - p2[0], p1[1] - p2[1])
    angle = math.degrees(math.atan2(p1[1] - p2[1], p1[0] - p2[0]))
    polygon = cv2.ellipse2Poly((int(cx), int(cy)), (int(length / 2), width), int(angle),
                               0, 360, 1)
    cv2.fillConvexPoly(canvas, np.asarray(polygon, np.int32), colour)


def _draw_hand(canvas: np.ndarray, hand: np.ndarray, width: int, threshold: float) -> None:
    shown = np.isfinite(hand).all(axis=1) & (hand[:, 2] >= threshold)
    pixels = [(int(x), int(y)) if ok else (0, 0) for (x, y, _), ok in zip(hand, shown,
                                                                           strict=True)]
    # Wan skips any hand point on row or column 0 (its "missing" marker is (0, 0)).
    shown &= np.array([x > 0 and y > 0 for x, y in pixels])
    for (a, b), colour in zip(WAN_HAND_EDGES, WAN_HAND_COLOURS, strict=True):
        if shown[a] and shown[b]:
            cv2.line(canvas, pixels[a], pixels[b], colour, thickness=width)
    for pixel, ok in zip(pixels, shown, strict=True):
        if ok:
            cv2.circle(canvas, pixel, width, WAN_HAND_POINT_COLOUR, thickness=-1)


# ---------------------------------------------------------------------------------------------
# Estimation


class WholeBodyPoseEstimator:
    """Top-down ViTPose: one person box per frame in, 133 keypoints per frame out.

    ``model`` is a transformers ViTPose folder (or a Hub id already in the local cache; nothing
    is downloaded) whose head has the 133 COCO-WholeBody outputs: today that means one made by
    :func:`convert_mmpose_checkpoint` (see ``defaults.POSE_REPO``). The crop and the heatmap
    decoding follow transformers' ``VitPoseImageProcessor`` (box padded by 1.25 to the input
    aspect, unbiased affine crop, DARK sub-pixel refinement) but run on cv2 and torch, which
    keeps scipy out and stays fast enough for a live camera.
    """

    def __init__(self, model: str | Path, *, device: str = "cpu", dtype: Any = None,
                 dataset_index: int | None = None) -> None:
        import torch

        source = str(model)
        if source.endswith((".pth", ".pt")):
            raise PoseModelError(f"{source} is an original ViTPose checkpoint; convert it once "
                                 "with faceswap_cam.models.preprocessing.pose."
                                 "convert_mmpose_checkpoint and load the folder it writes")
        transformers: Any = importlib.import_module("transformers")
        config = transformers.VitPoseConfig.from_pretrained(source, local_files_only=True)
        check_keypoint_count(int(config.num_labels), source)
        self.torch_dtype = _resolve_dtype(dtype)
        self.device = torch.device(device)
        self.model: Any = transformers.VitPoseForPoseEstimation.from_pretrained(
            source, local_files_only=True, dtype=self.torch_dtype)
        self.model.to(self.device).eval()
        backbone = self.model.config.backbone_config
        height, width = (int(v) for v in backbone.image_size)
        self.input_size = (width, height)
        try:
            processor = transformers.VitPoseImageProcessor.from_pretrained(
                source, local_files_only=True)
        except OSError:
            # The processor file only carries normalisation constants; its defaults are
            # what every ViTPose checkpoint was trained with.
            logger.warning("%s has no preprocessor_config.json; using ViTPose defaults", source)
            processor = transformers.VitPoseImageProcessor()
        size = processor.size
        if (int(size.width), int(size.height)) != self.input_size:
            logger.warning("%s: processor size %sx%s differs from the model's %sx%s; using the "
                           "model's", source, size.width, size.height, width, height)
        self.padding = 1.25  # VitPoseImageProcessor's box padding (box_to_center_and_scale)
        scale = float(processor.rescale_factor) if processor.do_rescale else 1.0
        mean, std = np.zeros(3, np.float32), np.ones(3, np.float32)
        if processor.do_normalize:
            mean = np.broadcast_to(np.asarray(processor.image_mean, np.float32), (3,))
            std = np.broadcast_to(np.asarray(processor.image_std, np.float32), (3,))
        # One multiply-add on the device: pixel * a + b == (pixel * scale - mean) / std.
        self._norm_a = torch.tensor(scale / std, dtype=torch.float32,
                                    device=self.device).reshape(1, 3, 1, 1)
        self._norm_b = torch.tensor(-mean / std, dtype=torch.float32,
                                    device=self.device).reshape(1, 3, 1, 1)
        experts = int(getattr(backbone, "num_experts", 1))
        if dataset_index is None and experts > 1:
            dataset_index = WHOLEBODY_DATASET_INDEX
        self.dataset_index = dataset_index if experts > 1 else None
        logger.info("pose model %s on %s (%s), input %dx%d%s", source, self.device,
                    self.torch_dtype, width, height,
                    f", expert {self.dataset_index}" if self.dataset_index is not None else "")

    def estimate(self, frames_rgb: Sequence[np.ndarray],
                 boxes: Sequence[tuple[float, float, float, float] | None]
                 ) -> list[Keypoints | None]:
        """Keypoints for the person in ``boxes[i]`` (x1, y1, x2, y2 pixels) of RGB uint8
        ``frames_rgb[i]``; ``None`` where the box is ``None`` or empty. One forward pass."""
        import torch

        if len(frames_rgb) != len(boxes):
            raise ValueError(f"{len(frames_rgb)} frames but {len(boxes)} boxes")
        results: list[Keypoints | None] = [None] * len(frames_rgb)
        crops: list[np.ndarray] = []
        rois: list[tuple[float, float, float, float]] = []
        where: list[int] = []
        for i, (frame, box) in enumerate(zip(frames_rgb, boxes, strict=True)):
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frame {i} is {frame.shape}, expected (H, W, 3) RGB")
            roi = None if box is None else self._roi(box)
            if roi is None:
                continue
            crops.append(self._crop(frame, roi))
            rois.append(roi)
            where.append(i)
        if not crops:
            return results

        pixels = torch.from_numpy(np.stack(crops)).to(self.device)
        pixels = pixels.permute(0, 3, 1, 2).float() * self._norm_a + self._norm_b
        kwargs: dict[str, Any] = {}
        if self.dataset_index is not None:
            kwargs["dataset_index"] = torch.full((len(crops),), self.dataset_index,
                                                 dtype=torch.long, device=self.device)
        with torch.inference_mode(), tf32_matmuls(self.device):
            heatmaps = self.model(pixel_values=pixels.to(self.torch_dtype), **kwargs).heatmaps
            coords, scores = decode_heatmaps(heatmaps.float())
        coords_np = coords.cpu().numpy()
        scores_np = scores.cpu().numpy()
        map_h, map_w = heatmaps.shape[2], heatmaps.shape[3]
        for row, (i, (cx, cy, roi_w, roi_h)) in enumerate(zip(where, rois, strict=True)):
            # Heatmap pixel 0 is the ROI's left/top edge and the last pixel its right/bottom
            # edge: the unbiased mapping the crop used.
            xy = np.empty((NUM_KEYPOINTS, 2), np.float32)
            xy[:, 0] = cx - roi_w / 2 + coords_np[row, :, 0] * roi_w / max(map_w - 1, 1)
            xy[:, 1] = cy - roi_h / 2 + coords_np[row, :, 1] * roi_h / max(map_h - 1, 1)
            results[i] = Keypoints(xy, scores_np[row])
        return results

    def _roi(self, box: tuple[float, float, float, float]
             ) -> tuple[float, float, float, float] | None:
        """Centre and size of the crop: the box grown to the input's aspect, then by 1.25."""
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        if not (math.isfinite(w) and math.isfinite(h)) or w <= 1 or h <= 1:
            logger.debug("skipping empty person box %s", box)
            return None
        aspect = self.input_size[0] / self.input_size[1]
        if w > aspect * h:
            h = w / aspect
        else:
            w = h * aspect
        return (x1 + x2) / 2, (y1 + y2) / 2, w * self.padding, h * self.padding

    def _crop(self, frame: np.ndarray, roi: tuple[float, float, float, float]) -> np.ndarray:
        cx, cy, roi_w, roi_h = roi
        in_w, in_h = self.input_size
        sx, sy = (in_w - 1) / roi_w, (in_h - 1) / roi_h
        matrix = np.array([[sx, 0.0, sx * (roi_w / 2 - cx)],
                           [0.0, sy, sy * (roi_h / 2 - cy)]], np.float64)
        return cv2.warpAffine(np.ascontiguousarray(frame), matrix, (in_w, in_h),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(0, 0, 0))


def check_keypoint_count(count: int, source: str) -> None:
    """Refuse a head that is not the 133-point COCO-WholeBody one, naming the fix."""
    if count == NUM_KEYPOINTS:
        return
    raise PoseModelError(
        f"{source}: this checkpoint gives {count} keypoints, Wan-Animate needs 133 whole-body "
        f"keypoints incl. face: use a ViTPose COCO-WholeBody checkpoint, e.g. "
        f"{defaults.POSE_FILE} from {defaults.POSE_REPO} converted with "
        f"faceswap_cam.models.preprocessing.pose.convert_mmpose_checkpoint (the usyd-community "
        f"ViTPose and ViTPose++ checkpoints have only the 17-keypoint COCO head)")


def _resolve_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
                 "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; one of {sorted(names)}")
        return names[dtype]
    return dtype


def decode_heatmaps(heatmaps: Any, kernel: int = 11) -> tuple[Any, Any]:
    """Sub-pixel peaks of ``(B, K, h, w)`` float heatmaps: ``(B, K, 2)`` x, y in heatmap
    pixels and ``(B, K)`` peak values as scores.

    The argmax is refined by DARK (one Newton step on the log of the Gaussian-smoothed
    heatmap), as transformers' ViTPose post-processing and Wan's mmpose decoding both do:
    a 64x48 heatmap cell is several frame pixels, too coarse for limbs and fingers.
    """
    import torch
    import torch.nn.functional as F

    batch, joints, height, width = heatmaps.shape
    flat = heatmaps.reshape(batch, joints, -1)
    scores, index = flat.max(dim=2)
    px = (index % width).float()
    py = torch.div(index, width, rounding_mode="floor").float()

    # Gaussian smoothing (sigma 0.8, kernel `kernel`), separable, mirrored at the border
    # like scipy's gaussian_filter that transformers uses.
    radius = min((kernel - 1) // 2, height - 1, width - 1)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=heatmaps.device)
    weights = torch.exp(-(taps**2) / (2 * 0.8**2))
    weights = weights / weights.sum()
    maps = heatmaps.reshape(batch * joints, 1, height, width)
    if radius > 0:
        maps = _mirror_pad(maps, radius)
        maps = F.conv2d(maps, weights.reshape(1, 1, 1, -1))
        maps = F.conv2d(maps, weights.reshape(1, 1, -1, 1))
    logs = maps.clamp(0.001, 50).log()
    logs = F.pad(logs, (1, 1, 1, 1), mode="replicate").reshape(batch, joints, -1)

    stride = width + 2
    centre = ((py + 1) * stride + (px + 1)).long()

    def at(dx: int, dy: int) -> Any:
        return logs.gather(2, (centre + dy * stride + dx).unsqueeze(2)).squeeze(2)

    middle = at(0, 0)
    right, left, down, up = at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
    gx, gy = 0.5 * (right - left), 0.5 * (down - up)
    eps = float(np.finfo(np.float32).eps)
    hxx = right - 2 * middle + left + eps
    hyy = down - 2 * middle + up + eps
    hxy = 0.5 * (at(1, 1) - right - down + 2 * middle - left - up + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    safe = det.abs() > 1e-12
    det = torch.where(safe, det, torch.ones_like(det))
    step_x = (hyy * gx - hxy * gy) / det
    step_y = (hxx * gy - hxy * gx) / det
    # A Newton step is only meaningful near a peak; on flat or saddle-shaped maps (missing
    # keypoints, untrained weights) it can jump anywhere, so keep it within one cell.
    step_x = torch.where(safe, step_x, torch.zeros_like(step_x)).nan_to_num(0.0).clamp(-1, 1)
    step_y = torch.where(safe, step_y, torch.zeros_like(step_y)).nan_to_num(0.0).clamp(-1, 1)
    coords = torch.stack([px - step_x, py - step_y], dim=2)
    return coords, scores


def _mirror_pad(maps: Any, radius: int) -> Any:
    import torch

    # Half-sample symmetric (d c b a | a b c d), scipy's "reflect"; torch's "reflect" mode
    # would skip the edge sample.
    maps = torch.cat([maps[..., :radius].flip(-1), maps, maps[..., -radius:].flip(-1)], dim=-1)
    return torch.cat([maps[..., :radius, :].flip(-2), maps, maps[..., -radius:, :].flip(-2)],
                     dim=-2)


# ---------------------------------------------------------------------------------------------
# Conversion of the original (mmpose) whole-body checkpoints

# ViTPose sizes by embedding width (ViTAE-Transformer/ViTPose configs): heads are not
# recoverable from the weights.
_HEADS_BY_WIDTH = {384: 12, 768: 12, 1024: 16, 1280: 16}
_HEAD_RENAMES = {"deconv_layers.0.": "deconv1.", "deconv_layers.1.": "batchnorm1.",
                 "deconv_layers.3.": "deconv2.", "deconv_layers.4.": "batchnorm2.",
                 "final_layer.": "conv."}
_BLOCK_RENAMES = {"norm1.": "layernorm_before.", "norm2.": "layernorm_after.",
                  "attn.proj.": "attention.output.dense.", "mlp.fc1.": "mlp.fc1.",
                  "mlp.fc2.": "mlp.fc2."}


def convert_mmpose_checkpoint(checkpoint: str | Path, output_dir: str | Path, *,
                              image_size: tuple[int, int] = (256, 192),
                              num_attention_heads: int | None = None) -> Path:
    """Write a transformers ViTPose folder from an original ViTPose ``.pth`` (mmpose layout:
    ``backbone.*`` ViT, ``keypoint_head.*`` heatmap head), e.g. ``vitpose-h-wholebody.pth``.

    The architecture is read from the weights (width, depth, head type, keypoint count);
    ``image_size`` is (H, W) of the training crops, 256x192 for every published ViTPose.
    """
    import torch

    transformers: Any = importlib.import_module("transformers")
    # weights_only: a downloaded pickle must not run code; these files hold only tensors.
    raw = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    state: dict[str, Any] = raw.get("state_dict", raw) if isinstance(raw, dict) else {}
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "backbone.pos_embed" not in state or "keypoint_head.final_layer.weight" not in state:
        raise PoseModelError(f"{checkpoint} is not an mmpose ViTPose checkpoint (no "
                             "backbone.pos_embed / keypoint_head.final_layer)")
    hidden = int(state["backbone.pos_embed"].shape[-1])
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("backbone.blocks."))
    heads = num_attention_heads or _HEADS_BY_WIDTH.get(hidden)
    if heads is None:
        raise PoseModelError(f"unknown ViTPose width {hidden}: pass num_attention_heads")
    mlp_ratio = int(state["backbone.blocks.0.mlp.fc1.weight"].shape[0]) // hidden
    num_labels = int(state["keypoint_head.final_layer.weight"].shape[0])
    classic = "keypoint_head.deconv_layers.0.weight" in state
    patches = (image_size[0] // 16) * (image_size[1] // 16) + 1
    if int(state["backbone.pos_embed"].shape[1]) != patches:
        raise PoseModelError(f"{checkpoint}: position embeddings do not fit {image_size}")

    converted: dict[str, Any] = {}
    for key, value in state.items():
        new = _convert_key(key, hidden, value, converted)
        if new is not None:
            converted[new] = value

    backbone = transformers.VitPoseBackboneConfig(
        image_size=list(image_size), patch_size=[16, 16], hidden_size=hidden,
        num_hidden_layers=depth, num_attention_heads=heads, mlp_ratio=mlp_ratio,
        qkv_bias=True, layer_norm_eps=1e-6, out_indices=[depth])
    config = transformers.VitPoseConfig(backbone_config=backbone, num_labels=num_labels,
                                        use_simple_decoder=not classic)
    model = transformers.VitPoseForPoseEstimation(config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise PoseModelError(f"{checkpoint}: conversion left missing {sorted(missing)[:5]} "
                             f"and unexpected {sorted(unexpected)[:5]} weights")
    out = Path(output_dir)
    model.save_pretrained(out)
    transformers.VitPoseImageProcessor(size={"height": image_size[0], "width": image_size[1]}
                                       ).save_pretrained(out)
    logger.info("converted %s (%d layers x %d, %d keypoints) to %s", checkpoint, depth,
                hidden, num_labels, out)
    return out


def _convert_key(key: str, hidden: int, value: Any, out: dict[str, Any]) -> str | None:
    """The transformers name for one mmpose weight, or None when it is dropped or split."""
    if key == "backbone.cls_token":
        return None  # a training leftover; the forward pass never reads it
    if key == "backbone.pos_embed":
        return "backbone.embeddings.position_embeddings"
    if key.startswith("backbone.patch_embed.proj."):
        return key.replace("backbone.patch_embed.proj.",
                           "backbone.embeddings.patch_embeddings.projection.")
    if key.startswith("backbone.last_norm."):
        return key.replace("backbone.last_norm.", "backbone.layernorm.")
    if key.startswith("keypoint_head."):
        rest = key.removeprefix("keypoint_head.")
        for old, new in _HEAD_RENAMES.items():
            if rest.startswith(old):
                return "head." + new + rest.removeprefix(old)
        raise PoseModelError(f"unexpected head weight {key}")
    if key.startswith("backbone.blocks."):
        _, _, layer, rest = key.split(".", 3)
        prefix = f"backbone.encoder.layer.{layer}."
        if rest.startswith("attn.qkv."):
            # One fused projection in ViTPose, rows ordered query, key, value.
            kind = rest.removeprefix("attn.qkv.")
            for part, chunk in zip(("query", "key", "value"), value.split(hidden, dim=0),
                                   strict=True):
                out[f"{prefix}attention.attention.{part}.{kind}"] = chunk.clone()
            return None
        for old, new in _BLOCK_RENAMES.items():
            if rest.startswith(old):
                return prefix + new + rest.removeprefix(old)
    raise PoseModelError(f"unexpected weight {key}")
