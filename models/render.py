"""Offline rendering: a clip already preprocessed the Wan-Animate way, run through the same
streaming engine as the live camera, every frame (none skipped).

Wan-Animate's own preprocessing writes a folder with ``src_ref.png`` (the character),
``src_pose.mp4`` (skeleton video), ``src_face.mp4`` (face crops) and, for replace mode,
``src_bg.mp4`` and ``src_mask.mp4`` (white = person).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from faceswap_cam.models import batching

if TYPE_CHECKING:
    from faceswap_cam.models.engine import SwapEngine
    from faceswap_cam.models.wan.streaming import StreamingWanAnimate

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".m4v")


class PreprocessedError(ValueError):
    """The preprocessed folder is unusable; the message says exactly why."""


@dataclass
class PreprocessedClip:
    """RGB uint8 frames (masks single-channel) read from a preprocessed folder."""

    reference: np.ndarray
    pose: list[np.ndarray]
    face: list[np.ndarray]
    background: list[np.ndarray] | None
    mask: list[np.ndarray] | None
    fps: float

    @property
    def size(self) -> tuple[int, int]:
        height, width = self.pose[0].shape[:2]
        return width, height

    def __len__(self) -> int:
        return len(self.pose)


def _read_video(path: Path, *, colour: int | None = cv2.COLOR_BGR2RGB
                ) -> tuple[list[np.ndarray], float]:
    """Every frame (converted with ``colour``, or left BGR when None) and the file's fps
    (0 when it does not say)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise PreprocessedError(f"{path} cannot be decoded as a video")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame if colour is None else cv2.cvtColor(frame, colour))
    capture.release()
    if not frames:
        raise PreprocessedError(f"{path} has no frames")
    return frames, fps


def load_preprocessed(folder: Path, mode: str) -> PreprocessedClip:
    """Read and check a preprocessed folder for ``mode`` ("replace" or "animate")."""
    if not folder.is_dir():
        raise PreprocessedError(f"{folder} is not a folder")
    needed = ["src_ref.png", "src_pose.mp4", "src_face.mp4"]
    if mode == "replace":
        needed += ["src_bg.mp4", "src_mask.mp4"]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        hint = " (replace mode needs src_bg.mp4 and src_mask.mp4; use --mode animate without " \
               "them)" if mode == "replace" else ""
        raise PreprocessedError(f"{folder} lacks {', '.join(missing)}{hint}")
    reference_bgr = cv2.imread(str(folder / "src_ref.png"), cv2.IMREAD_COLOR)
    if reference_bgr is None:
        raise PreprocessedError(f"{folder / 'src_ref.png'} cannot be decoded as an image")
    pose, fps = _read_video(folder / "src_pose.mp4")
    face, _ = _read_video(folder / "src_face.mp4")
    background = mask = None
    if mode == "replace":
        background, _ = _read_video(folder / "src_bg.mp4")
        mask, _ = _read_video(folder / "src_mask.mp4", colour=cv2.COLOR_BGR2GRAY)
    counts = {"src_pose.mp4": len(pose), "src_face.mp4": len(face)}
    sizes = {"src_pose.mp4": pose[0].shape[:2]}
    if background is not None and mask is not None:
        counts |= {"src_bg.mp4": len(background), "src_mask.mp4": len(mask)}
        sizes |= {"src_bg.mp4": background[0].shape[:2], "src_mask.mp4": mask[0].shape[:2]}
    if len(set(counts.values())) > 1:
        raise PreprocessedError("frame counts differ: "
                                + ", ".join(f"{k} has {v}" for k, v in counts.items()))
    if len(set(sizes.values())) > 1:
        raise PreprocessedError("frame sizes differ: " + ", ".join(
            f"{k} is {w}x{h}" for k, (h, w) in sizes.items()))
    height, width = pose[0].shape[:2]
    if height % 16 or width % 16:
        raise PreprocessedError(f"src_pose.mp4 is {width}x{height}; Wan-Animate needs both "
                                "sides divisible by 16")
    return PreprocessedClip(cv2.cvtColor(reference_bgr, cv2.COLOR_BGR2RGB), pose, face,
                            background, mask, fps or 30.0)


def write_frames(frames: Iterator[np.ndarray] | list[np.ndarray], output: Path, fps: float) -> int:
    """RGB uint8 frames to a video file, or to lossless PNGs when ``output`` has no suffix."""
    count = 0
    if output.suffix == "":
        output.mkdir(parents=True, exist_ok=True)
        for frame in frames:
            path = output / f"{count:05d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            count += 1
        return count
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise PreprocessedError(f"--output {output}: use a video file ({', '.join(VIDEO_SUFFIXES)})"
                                " or a folder name without an extension for PNG frames")
    writer: cv2.VideoWriter | None = None
    for frame in frames:
        count += 1
        if writer is None:
            height, width = frame.shape[:2]
            codec = "MJPG" if output.suffix.lower() == ".avi" else "mp4v"
            writer = cv2.VideoWriter(str(output), cv2.VideoWriter.fourcc(*codec), fps,
                                     (width, height))
            if not writer.isOpened():
                raise PreprocessedError(f"cannot write video {output}")
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if writer is not None:
        writer.release()
    return count


def render_clip(stream: StreamingWanAnimate, clip: PreprocessedClip) -> list[np.ndarray]:
    """Every frame of ``clip`` through the streaming engine: RGB uint8 at the clip's size.

    The clip is padded and cut into calls exactly as ``WanAnimatePipeline`` pads and segments
    a whole clip, so the result equals the pipeline's on the same inputs and seed.
    """
    import PIL.Image

    from faceswap_cam.models.wan.streaming import SegmentInputs

    if clip.size != (stream.width, stream.height):
        raise PreprocessedError(f"the engine generates {stream.width}x{stream.height} but the "
                                f"clip is {clip.size[0]}x{clip.size[1]}")
    padded, calls = batching.plan(stream, len(clip))
    pose, face = batching.pad(clip.pose, padded), batching.pad(clip.face, padded)
    background = None if clip.background is None else batching.pad(clip.background, padded)
    mask = None if clip.mask is None else batching.pad(clip.mask, padded)
    stream.set_reference(PIL.Image.fromarray(clip.reference))
    frames: list[np.ndarray] = []
    start = 0
    for count, new in enumerate(calls, start=1):
        window = slice(start, start + new)
        inputs = SegmentInputs(
            pose=pose[window], face=face[window],
            background=None if background is None else background[window],
            mask=None if mask is None else mask[window])
        frames.extend(stream.generate_uint8(inputs))
        logger.info("segment %d/%d done", count, len(calls))
        start += new
    return frames[: len(clip)]


def read_clip(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of a video file, BGR like camera frames, and its frame rate."""
    if not path.is_file():
        raise PreprocessedError(f"video not found: {path}")
    frames, fps = _read_video(path, colour=None)
    return frames, fps or 30.0


def render_raw(engine: SwapEngine, frames: list[np.ndarray]) -> list[np.ndarray]:
    """Every frame of a raw clip through the whole engine (preprocessing, generation,
    compositing), in the batches the live processor would give it, none skipped.

    The last batch is filled up the way the pipeline pads a clip, and the fill is dropped.
    A batch with nobody in view ends the chain, as in the live processor: the engine is
    reset and the frames after it start a new one.
    """
    out: list[np.ndarray] = []
    start = 0
    while start < len(frames):
        padded, calls = batching.plan(engine, len(frames) - start)
        # Padded over the whole clip, as the pipeline would pad it.
        clip = batching.pad(frames, start + padded)
        for new in calls:
            result = engine.process(clip[start:start + new])
            out.extend(result.frames[:len(frames) - start])  # the fill is dropped
            start += new
            if not result.swapped:
                engine.reset()
                break
    return out
