"""The person mask for Wan-Animate's replace mode, made live with SAM2's streaming video memory.

Wan-Animate's own preprocessing (``wan/modules/animate/preprocess/process_pipepline.py`` in
Wan-Video/Wan2.2) prompts SAM2 with body keypoints, all positive, on a few key frames, dilates
the tracked mask with a 7x7 kernel three times and then fills the grid cells it touches (one
cell by default: the mask's bounding box). Offline it re-reads whole 400-frame chunks; a camera
has no chunks, so here SAM2 runs as a transformers streaming session: frames go in one by one
as they arrive, the tracker's memory carries across calls, and nothing touches the disk.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceswap_cam.models import defaults

logger = logging.getLogger(__name__)

# The live masker loads ``defaults.SAM2_REPO`` by default (see there for why). This is the
# model Wan-Animate's preprocessing itself uses, for parity checks (also in transformers format
# on the Hub).
WAN_SAM2_MODEL = "facebook/sam2-hiera-large"

# Wan-Animate's replace-mode defaults (preprocess_data.py): ``--k 7 --iterations 3`` dilate the
# SAM2 mask by 3 px per pass, three passes, and ``--w_len 1 --h_len 1`` fill it to its box.
WAN_DILATE_PX = 3 * (7 // 2)
WAN_GRID = (1, 1)

# COCO-WholeBody indices of the body points Wan-Animate prompts SAM2 with. Wan picks OpenPose-18
# body points [0, 1, 2, 5, 8, 11, 10, 13] (nose, neck, right/left shoulder, right/left hip,
# right/left ankle) after converting the 133 whole-body points (pose2d_utils.split_kp2ds_for_aa);
# the neck has no whole-body point of its own and is the mean of the two shoulders.
_NOSE = 0
_L_SHOULDER, _R_SHOULDER = 5, 6
_L_HIP, _R_HIP = 11, 12
_L_ANKLE, _R_ANKLE = 15, 16
WHOLEBODY_POINTS = 133

_OBJECT_ID = 1


@dataclass(frozen=True, eq=False)
class Prompt:
    """Where the person is on one frame: pixel ``points`` (N, 2) in xy with ``labels`` (N,),
    1 = person, 0 = not person, and/or a ``box`` (x0, y0, x1, y1) in pixels."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.points is None and self.box is None:
            raise ValueError("a prompt needs points or a box")
        if (self.points is None) != (self.labels is None):
            raise ValueError("points and labels go together")
        if self.points is not None and self.labels is not None:
            points = np.asarray(self.points, np.float32)
            labels = np.asarray(self.labels, np.int64)
            if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
                raise ValueError(f"points must be (N, 2) with N >= 1, got {points.shape}")
            if labels.shape != (len(points),):
                raise ValueError(f"labels must be ({len(points)},), got {labels.shape}")
            if not np.isin(labels, (0, 1)).all():
                raise ValueError("labels are 1 (person) or 0 (not person)")
            object.__setattr__(self, "points", points)
            object.__setattr__(self, "labels", labels)
        if self.box is not None:
            x0, y0, x1, y1 = (float(v) for v in self.box)
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"box must be (x0, y0, x1, y1) with x1 > x0, y1 > y0: {self.box}")
            object.__setattr__(self, "box", (x0, y0, x1, y1))


def prompt_from_keypoints(
    xy: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float = 0.5,
    frame_size: tuple[int, int] | None = None,
) -> Prompt | None:
    """Wan-Animate's SAM2 prompt from one person's 133 COCO-WholeBody keypoints (pixels).

    The points are Wan's: nose, neck, shoulders, hips and ankles, all positive. Wan uses them
    whatever their confidence, which is safe on its full-body clips; a webcam mostly sees the
    upper body, and a guessed ankle lands on the desk as a "person" click, so points scoring
    under ``threshold`` are left out (0.5 is the score under which Wan's skeleton drawing
    leaves a point out, so the mask and the pose video agree on what is visible). With
    ``frame_size`` (W, H), points outside the frame are left out too. ``None`` when no point
    is left: there is nobody to prompt with.
    """
    xy = np.asarray(xy, np.float32)
    scores = np.asarray(scores, np.float32)
    if xy.shape != (WHOLEBODY_POINTS, 2) or scores.shape != (WHOLEBODY_POINTS,):
        raise ValueError(
            f"expected ({WHOLEBODY_POINTS}, 2) points and ({WHOLEBODY_POINTS},) scores, "
            f"got {xy.shape} and {scores.shape}"
        )
    # Wan averages the score along with the position, so the neck is as sure as its shoulders.
    neck_xy = (xy[_L_SHOULDER] + xy[_R_SHOULDER]) / 2
    neck_score = (scores[_L_SHOULDER] + scores[_R_SHOULDER]) / 2
    order = (_NOSE, None, _R_SHOULDER, _L_SHOULDER, _R_HIP, _L_HIP, _R_ANKLE, _L_ANKLE)
    points: list[np.ndarray] = []
    for index in order:
        point, score = (neck_xy, neck_score) if index is None else (xy[index], scores[index])
        if not np.isfinite(point).all() or not score >= threshold:
            continue
        if frame_size is not None:
            width, height = frame_size
            if not (0 <= point[0] < width and 0 <= point[1] < height):
                continue
        points.append(point)
    if not points:
        return None
    return Prompt(points=np.stack(points), labels=np.ones(len(points), np.int64))


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by exactly ``pixels`` in every direction, corners included (square
    kernel, as Wan's ``cv2.dilate`` with ``np.ones((k, k))``)."""
    if pixels < 0:
        raise ValueError(f"pixels must be >= 0, got {pixels}")
    binary = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
    if pixels == 0:
        return binary
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return np.asarray(cv2.dilate(binary, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0))


def feather(mask: np.ndarray, pixels: int) -> np.ndarray:
    """float32 alpha in [0, 1]: 0 outside ``mask``, rising inside it over ``pixels`` from the
    edge (1/pixels on the edge pixel, 1 from ``pixels`` in).

    The ramp runs inward so the feathered edge never reaches past the mask: outside it the
    composite keeps the camera's pixels exactly. The mask Wan-Animate is given is dilated well
    past the person, so the ramp falls on that margin, not on the person.
    """
    if pixels < 0:
        raise ValueError(f"pixels must be >= 0, got {pixels}")
    inside = np.asarray(mask) > 0
    if pixels == 0 or not inside.any() or inside.all():
        return inside.astype(np.float32)
    # OpenCV counts what lies past the frame as inside, so a person cut by the frame edge does
    # not fade out there: only real mask edges get the ramp. The 5x5 mask's distances came
    # within 0.16 px of the exact ones within 9 px of the edge (200 random shapes; an 8 px
    # ramp's alpha within 1.6 %, four levels of 255), at under half the exact transform's
    # time, which was a quarter of compositing a 720p frame, the biggest CPU share of a batch
    # (models/plan/host.py).
    distance = np.asarray(cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5))
    alpha: np.ndarray = np.clip(distance / float(pixels), 0.0, 1.0).astype(np.float32)
    alpha[~inside] = 0.0
    return alpha


def blockify(mask: np.ndarray, grid: tuple[int, int] = WAN_GRID) -> np.ndarray:
    """Wan's ``get_aug_mask``: split the mask's bounding box into ``grid`` (columns, rows)
    cells and fill every cell the mask touches. (1, 1), Wan's default, gives the box itself;
    finer grids follow the outline more closely. Unlike Wan's loop, the box includes its last
    row and column, and an empty mask stays empty instead of failing."""
    cols, rows = grid
    if cols < 1 or rows < 1:
        raise ValueError(f"grid must be at least (1, 1), got {grid}")
    inside = np.asarray(mask) > 0
    out = np.zeros(inside.shape, np.uint8)
    ys, xs = np.nonzero(inside)
    if len(xs) == 0:
        return out
    x_edges = np.linspace(xs.min(), xs.max() + 1, cols + 1).round().astype(int)
    y_edges = np.linspace(ys.min(), ys.max() + 1, rows + 1).round().astype(int)
    for y0, y1 in itertools.pairwise(y_edges.tolist()):
        for x0, x1 in itertools.pairwise(x_edges.tolist()):
            if y1 > y0 and x1 > x0 and inside[y0:y1, x0:x1].any():
                out[y0:y1, x0:x1] = 255
    return out


def wan_mask(
    mask: np.ndarray, *, dilate_px: int = WAN_DILATE_PX, grid: tuple[int, int] | None = WAN_GRID
) -> np.ndarray:
    """The mask Wan-Animate's replace mode is conditioned on, from SAM2's person mask: dilated
    by ``dilate_px``, then filled cell by cell on ``grid`` (``None`` keeps the outline)."""
    grown = dilate(mask, dilate_px)
    return grown if grid is None else blockify(grown, grid)


class PersonMasker:
    """SAM2 person masks for a live stream: one transformers streaming video session, fed frame
    by frame, its memory kept across calls until :meth:`reset`.

    A track starts (in a fresh session) on the first frame that comes with a prompt. While it
    runs, frames need no prompt; a prompt is used again every ``refresh_every`` frames (added
    to the running session as a new conditioning frame, so drift is corrected without losing
    the memory), and after SAM2 has said "nobody here" for ``lost_after`` frames in a row
    (then the session starts over, since memory of a lost track only drags the new one).

    The session keeps every frame and every output it is given; for a camera that runs for
    hours that is a leak, so after each frame everything SAM2 can no longer read is dropped:
    frames but the current one, memories older than its memory window, and conditioning frames
    beyond the newest ``max_cond_frames``.

    The image encoder reads one frame and no memory, so with ``encode_together`` a batch's
    frames are encoded in one call and the tracker finds each frame's features in its session
    cache: one batched pass instead of a pass per frame, each of which a GPU runs far below
    its throughput. ``False`` encodes frame by frame as transformers does (the reference the
    tests compare with). The default (None) batches on a CUDA device only: on a CPU the
    batched pass measured slower (real-size hiera-tiny, 8 frames at 1024 px on 2 cores: 18.4
    and 22.1 s against 15.2 and 18.0 s frame by frame), and on a GPU
    ``benchmarks/preprocess.py --gpu`` measures both.
    """

    def __init__(
        self,
        model: str | Path = defaults.SAM2_REPO,
        *,
        device: str = "auto",
        dtype: str = "auto",
        refresh_every: int = 0,
        lost_after: int | None = 15,
        max_cond_frames: int = 4,
        mask_threshold: float = 0.0,
        encode_together: bool | None = None,
    ) -> None:
        import torch
        import transformers

        from faceswap_cam.models.wan.loading import pick_device, pick_dtype
        from faceswap_cam.models.weights import WeightsError

        if refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 0 (0 = never), got {refresh_every}")
        if lost_after is not None and lost_after < 1:
            raise ValueError(f"lost_after must be >= 1 or None, got {lost_after}")
        if max_cond_frames < 1:
            raise ValueError(f"max_cond_frames must be >= 1, got {max_cond_frames}")
        self._torch: Any = torch
        self.device = pick_device(device)
        self.dtype: Any = pick_dtype(dtype, self.device)
        model_class: Any = transformers.Sam2VideoModel
        processor_class: Any = transformers.Sam2VideoProcessor
        source = str(model)
        folder = Path(source).expanduser()
        if folder.exists():
            source = str(folder)
        elif folder.is_absolute() or source.startswith(".") or source.count("/") != 1:
            # Not a Hub id (owner/name) either: the Hub client would only say "bad repo id".
            raise WeightsError(f"no SAM2 video model folder at {folder}")
        try:
            self._processor: Any = processor_class.from_pretrained(source, local_files_only=True)
            loaded: Any = model_class.from_pretrained(
                source, dtype=self.dtype, local_files_only=True
            )
        except OSError as exc:
            raise WeightsError(
                f"SAM2 video weights {source!r} are not on this machine ({exc}). Put a "
                f"transformers-format SAM2 checkpoint there (e.g. {defaults.SAM2_REPO})."
            ) from exc
        self._model: Any = loaded.to(self.device).eval()
        config = self._model.config
        # Memories and object pointers older than this are never read again.
        self._memory_window = max(
            int(config.num_maskmem), int(config.max_object_pointers_in_encoder)
        )
        self.refresh_every = refresh_every
        self.lost_after = lost_after
        self.max_cond_frames = max_cond_frames
        self.mask_threshold = mask_threshold
        self.encode_together = (str(self.device).startswith("cuda") if encode_together is None
                                else encode_together)
        self._session: Any = None
        self._frame_size: tuple[int, int] | None = None
        self._next_index = 0
        self._since_prompt = 0
        self._lost = 0
        logger.info("SAM2 video from %s (%s, %s)", source, self.device, self.dtype)

    @property
    def session(self) -> Any:
        """The running ``Sam2VideoInferenceSession``, or ``None`` before a track starts."""
        return self._session

    @property
    def frames_in_session(self) -> int:
        """Frames the running session has tracked."""
        return self._next_index if self._session is not None else 0

    @property
    def tracking(self) -> bool:
        return self._session is not None

    def reset(self) -> None:
        """Forget the track (scene cut, nobody there): the next prompt starts a new session."""
        if self._session is not None:
            logger.debug("SAM2 session ended after %d frames", self._next_index)
        self._session = None
        self._frame_size = None
        self._next_index = 0
        self._since_prompt = 0
        self._lost = 0

    def masks(
        self, frames_rgb: Sequence[np.ndarray], prompts: Sequence[Prompt | None] | None = None
    ) -> list[np.ndarray]:
        """One uint8 mask (H, W) in {0, 255} per RGB frame, at the frame's size. ``prompts``
        (one per frame, ``None`` for none) are used as the class doc says; frames before any
        track has started get an empty mask."""
        if prompts is None:
            prompts = [None] * len(frames_rgb)
        if len(prompts) != len(frames_rgb):
            raise ValueError(f"{len(frames_rgb)} frames but {len(prompts)} prompts")
        for frame in frames_rgb:
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(
                    f"frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}"
                )
        if not frames_rgb:
            return []
        if self._session is None and all(p is None for p in prompts):
            # Nobody to track and nobody to start with: SAM2 need not even see the frames.
            return [np.zeros(f.shape[:2], np.uint8) for f in frames_rgb]
        with self._torch.inference_mode():
            # One resize-and-normalise call for the batch; the tracker itself must go frame by
            # frame, each frame reading the memory the previous one wrote.
            pixels = self._processor(
                images=list(frames_rgb), device=self.device, return_tensors="pt"
            ).pixel_values
            encoded = _EncodedFrames(self._model, pixels, self.dtype) if self.encode_together \
                else None
            return [
                self._mask(frame, prompt, pixels[i], None if encoded is None else
                           functools.partial(encoded.features, i))
                for i, (frame, prompt) in enumerate(zip(frames_rgb, prompts, strict=True))
            ]

    def _start(self, size: tuple[int, int]) -> Any:
        self._session = self._processor.init_video_session(
            inference_device=self.device, dtype=self.dtype
        )
        self._frame_size = size
        self._next_index = 0
        self._since_prompt = 0
        self._lost = 0
        return self._session

    def _wants_prompt(self) -> bool:
        if self._session is None or self._lost_track():
            return True
        return self.refresh_every > 0 and self._since_prompt >= self.refresh_every

    def _mask(self, frame: np.ndarray, prompt: Prompt | None, pixels: Any,
              features: Callable[[], dict[str, Any]] | None) -> np.ndarray:
        height, width = frame.shape[:2]
        if self._session is not None and self._frame_size != (height, width):
            # SAM2's session is fixed to one video size; a new camera mode is a new video.
            logger.info("frame size changed to %dx%d: SAM2 track restarts", width, height)
            self.reset()
        prompting = prompt is not None and self._wants_prompt()
        if self._session is None and not prompting:
            return np.zeros((height, width), np.uint8)
        if prompting and (self._session is None or self._lost_track()):
            self._start((height, width))
        session = self._session
        index = self._next_index
        if prompting and prompt is not None:
            self._add_prompt(session, index, prompt, (height, width))
        if features is not None:
            # The session's own cache: the tracker reads this frame's features from it rather
            # than encoding the frame again (a session caches one frame, so this replaces the
            # last one's).
            session.cache.cache_vision_features(index, features())
        output = self._model(inference_session=session, frame_idx=index, frame=pixels)
        self._next_index += 1
        # Counted from the prompted frame itself, so refresh_every=K prompts frames 0, K, 2K...
        self._since_prompt = 1 if prompting else self._since_prompt + 1
        present = bool((output.object_score_logits > 0).any())
        self._lost = 0 if present else self._lost + 1
        masks = self._processor.post_process_masks(
            [output.pred_masks], original_sizes=[[height, width]], binarize=False
        )[0]
        person = (masks[0, 0] > self.mask_threshold).cpu().numpy()
        self._prune(session, index)
        return np.where(person, 255, 0).astype(np.uint8)

    def _lost_track(self) -> bool:
        return self.lost_after is not None and self._lost >= self.lost_after

    def _add_prompt(
        self, session: Any, index: int, prompt: Prompt, size: tuple[int, int]
    ) -> None:
        points: list[list[list[list[float]]]] | None = None
        labels: list[list[list[int]]] | None = None
        boxes: list[list[list[float]]] | None = None
        if prompt.points is not None and prompt.labels is not None:
            # Nesting is [image][object][point][xy]; one image, one object (the person).
            points = [[prompt.points.astype(float).tolist()]]
            labels = [[prompt.labels.astype(int).tolist()]]
        if prompt.box is not None:
            boxes = [[list(prompt.box)]]
        self._processor.add_inputs_to_inference_session(
            inference_session=session,
            frame_idx=index,
            obj_ids=_OBJECT_ID,
            input_points=points,
            input_labels=labels,
            input_boxes=boxes,
            original_size=size,
        )

    def _prune(self, session: Any, index: int) -> None:
        frames = session.processed_frames
        if frames:
            for key in [k for k in frames if k != index]:
                del frames[key]
        oldest = index - self._memory_window
        for obj_idx, outputs in session.output_dict_per_obj.items():
            stale = [k for k in outputs["non_cond_frame_outputs"] if k < oldest]
            for key in stale:
                del outputs["non_cond_frame_outputs"][key]
            tracked = session.frames_tracked_per_obj.get(obj_idx, {})
            for key in [k for k in tracked if k < oldest]:
                del tracked[key]
            cond = outputs["cond_frame_outputs"]
            for key in sorted(cond)[: max(0, len(cond) - self.max_cond_frames)]:
                del cond[key]
                session.point_inputs_per_obj.get(obj_idx, {}).pop(key, None)
                session.mask_inputs_per_obj.get(obj_idx, {}).pop(key, None)


#: Frames per batched image-encoder call: a long segment (``--segment-frames 77``) in one call
#: would hold every frame's activations at once.
ENCODE_CHUNK = 8


class _EncodedFrames:
    """A batch's frames through SAM2's image encoder, :data:`ENCODE_CHUNK` to a call, each
    call made when the tracker first needs a frame it holds: from that frame on (frames before
    a track starts are never run, so they are not encoded either)."""

    def __init__(self, model: Any, pixels: Any, dtype: Any) -> None:
        self._model = model
        self._pixels = pixels
        self._dtype = dtype
        self._first = self._end = 0
        self._feats: list[Any] = []
        self._pos: list[Any] = []

    def features(self, index: int) -> dict[str, Any]:
        """Frame ``index``'s features as the session cache holds them: per feature level,
        (positions, 1, channels), the values the model's own encoding of that one frame
        gives."""
        if not self._first <= index < self._end:
            self._first, self._end = index, min(len(self._pixels), index + ENCODE_CHUNK)
            output = self._model.get_image_features(
                self._pixels[self._first:self._end].to(self._dtype), return_dict=True)
            self._feats = list(output.fpn_hidden_states)
            self._pos = list(output.fpn_position_encoding)
        row = index - self._first
        # Copies, so the session cache holds this frame's features, not the whole chunk's.
        return {"vision_feats": [f[:, row:row + 1].contiguous() for f in self._feats],
                "vision_pos_embeds": [p[:, row:row + 1].contiguous() for p in self._pos]}
