"""The ``wan-animate`` swap engine: preprocessing -> streaming Wan-Animate -> camera frames.

Imported only by the engine factory (it pulls in torch and diffusers).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import torch

from faceswap_cam.models import defaults
from faceswap_cam.models.engine import Box, EngineError, GenerationWindow, SwapResult
from faceswap_cam.models.preprocessing.base import Preprocessor, StandInPreprocessor
from faceswap_cam.models.preprocessing.person import Box as PersonBox
from faceswap_cam.models.presets import FROM_PRESET, apply_preset
from faceswap_cam.models.quantize import QuantizeError, runnable_quantize
from faceswap_cam.models.wan import presets as wan_presets
from faceswap_cam.models.wan.compositing import composite, match_colour
from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline, parse_lora, pick_device
from faceswap_cam.models.wan.requirements import preprocessing_models
from faceswap_cam.models.wan.stream_engine import (
    MEMORY_ADVICE,
    StreamingSwapEngine,
    engine_errors,
)
from faceswap_cam.models.wan.streaming import SegmentInputs, StreamingWanAnimate
from faceswap_cam.models.wan.window import Window, choose_window, whole_frame
from faceswap_cam.models.weights import WeightsError

logger = logging.getLogger(__name__)

#: Continuing calls in a row a person must fit a smaller window before the chain moves to
#: it: moving costs a seam (a new chain), so a lean back for a moment does not.
SHRINK_AFTER = 3


class WanAnimateEngine(StreamingSwapEngine):
    """:class:`~faceswap_cam.models.engine.SwapEngine` over :class:`StreamingWanAnimate`.

    ``first_batch`` is the segment length L, ``next_batch`` L - P. Swapped frames come back at
    the camera's size and in BGR, like every frame inside the daemon. The caller decides when
    a segment chain restarts (``reset()``); a batch of the wrong length for the chain is an
    error, never a silent restart.
    """

    def __init__(
        self,
        *,
        wan_model: str,
        mode: str = defaults.MODE,
        steps: int = defaults.STEPS,
        segment_frames: int = defaults.SEGMENT_FRAMES,
        carry: int = defaults.CARRY,
        seed: int = defaults.SEED,
        prompt: str = "",
        guidance_scale: float = defaults.GUIDANCE_SCALE,
        gen_size: tuple[int, int] | None = None,
        gen_short_side: int = defaults.GEN_SHORT_SIDE,
        load: LoadOptions | None = None,
        preprocessor: Preprocessor | None = None,
        pipeline: Any = None,
        colour_match: bool = False,
        feather_px: int = defaults.FEATHER_PX,
        gen_window: str = defaults.GEN_WINDOW,
    ) -> None:
        try:
            pipe = pipeline if pipeline is not None else load_pipeline(wan_model,
                                                                       load or LoadOptions())
        except (WeightsError, QuantizeError) as exc:
            raise EngineError(str(exc)) from exc
        except torch.OutOfMemoryError as exc:
            raise EngineError(f"out of GPU memory while loading Wan-Animate: {MEMORY_ADVICE}") \
                from exc
        self._prompt_embeds: tuple[torch.Tensor, torch.Tensor | None] | None = None
        super().__init__(pipe, {
            "mode": mode, "steps": steps, "segment_frames": segment_frames, "carry": carry,
            "seed": seed, "prompt": prompt, "guidance_scale": guidance_scale},
            segment_frames=segment_frames, carry=carry, gen_size=gen_size,
            gen_short_side=gen_short_side)
        self.preprocessor: Preprocessor = preprocessor or StandInPreprocessor()
        self.colour_match = colour_match
        self.feather_px = feather_px
        self.mode = mode
        self.gen_window = defaults.GenWindow(gen_window)
        #: Whether calls may generate a window: animation repaints the whole frame.
        self._windowed = self.gen_window == defaults.GenWindow.PERSON and mode == "replace"
        self._carry = carry
        #: Chains started again because the person left the window (tests, the stats).
        self.window_restarts = 0
        self._window: Window | None = None
        self._window_frame: tuple[int, int] | None = None
        #: Composites a batch's frames side by side: OpenCV lets go of the GIL, and at 720p
        #: one frame's blend (its feather's distance transform mostly) takes about 5 ms, so
        #: a batch of 8 in series would spend much of the room the cadence keeps. Made on the
        #: first call that composites, shut in close().
        self._compositor: ThreadPoolExecutor | None = None
        #: The last call's last P camera frames and person boxes: a new chain in a new window
        #: starts from them (see process).
        self._kept: list[np.ndarray] = []
        self._kept_people: list[PersonBox] = []
        #: Continuing calls in a row whose person fitted a smaller window than the chain's.
        self._smaller_calls = 0

    def _new_stream(self, width: int, height: int) -> StreamingWanAnimate:
        # Every window size's stream conditions on the same prompt: encoded once.
        stream = StreamingWanAnimate(self.pipe, height=height, width=width,
                                     prompt_embeds=self._prompt_embeds, **self._options)
        self._prompt_embeds = (stream.prompt_embeds, stream.negative_prompt_embeds)
        return stream

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        if not frames:
            return SwapResult([])
        self._check_reference()  # before any preprocessing
        frame_h, frame_w = frames[0].shape[:2]
        frame_size = (frame_w, frame_h)
        people = self.preprocessor.locate(frames, size=self._full_size(frame_size))
        if any(box is None for box in people):
            # Nobody to swap: never invent a person. The frames go back as they came; the
            # caller ends the segment chain (resets) before the next batch.
            return SwapResult.untouched(frames)
        found = [box for box in people if box is not None]
        frames_in, people_in = list(frames), found
        window, kept = self._window, 0
        moved = None
        if window is not None and self._kept and len(frames) == self.next_batch:
            moved = self._moved_window(window, found, frame_size)
        if moved is not None:
            # The caller's chain goes on, so this call starts a new one in the new window
            # from the frames the last call kept: a segment of L frames costs what a
            # continuing one does, and nothing shows the real person. The kept frames are
            # generated again only to start the segment; their output is dropped.
            window, kept = moved, len(self._kept)
            frames_in, people_in = self._kept + list(frames), self._kept_people + found
            self.window_restarts += 1
            # Until this call succeeds there is no chain to go on with.
            self._forget_chain()
            self.preprocessor.reset()
            for stream in self._streams.values():
                stream.reset()
        elif window is None or self._window_frame != frame_size:
            window = self._choose_window(found, frame_size)
        stream = self._stream_at(window.gen_size)
        face_size = int(self.pipe.transformer.config.motion_encoder_size)
        batch = self.preprocessor.process(
            frames_in, size=window.gen_size, face_size=face_size,
            with_background=self.mode == "replace",
            window=None if window.whole else window.box, people=people_in)
        if not batch.present:
            return SwapResult.untouched(frames)
        # The arrays as they are: at the generation size they go to the device unconverted.
        inputs = SegmentInputs(pose=batch.pose, face=batch.face, background=batch.background,
                               mask=batch.mask)
        with engine_errors():
            generated = stream.generate_uint8(inputs)[kept:]
        self._window, self._window_frame = window, frame_size
        self.generation_window = GenerationWindow(*window.box, *window.gen_size)
        self._kept = [np.array(frame) for frame in frames_in[len(frames_in) - self._carry:]]
        self._kept_people = people_in[len(people_in) - self._carry:]
        if self.mode != "replace":
            # Animation repaints the whole frame.
            return SwapResult([_to_frame(pixels, frame_size) for pixels in generated])
        masks = (batch.mask or [])[kept:]
        if self._compositor is None:
            self._compositor = compositor()
        frames_out, boxes = paste_batch(self._compositor, frames, generated, masks, window,
                                        feather_px=self.feather_px,
                                        colour_match=self.colour_match)
        return SwapResult(frames_out, changed=boxes)

    def _moved_window(self, window: Window, people: Sequence[PersonBox],
                      frame_size: tuple[int, int]) -> Window | None:
        """The window a continuing batch moves the chain to, or None to stay. A new one when
        the camera's frame size changed (the kept frames are scaled to it) or the person left
        this window; a smaller one once the person has fitted it for :data:`SHRINK_AFTER`
        calls in a row (someone who leaned in and sat back). It is placed around the kept
        frames' person as well as this batch's: all of them start the new segment."""
        resized = self._window_frame != frame_size
        if resized:
            self._scale_kept(frame_size)
        everyone = self._kept_people + list(people)
        if resized or not window.holds(people, frame_size):
            moved = self._choose_window(everyone, frame_size)
            logger.info("%s: a new chain in %s", "the camera's frame size changed" if resized
                        else "the person left the generation window", moved)
            self._smaller_calls = 0
            return moved
        if not self._windowed:
            return None
        smaller = choose_window(everyone, frame_size, full_gen_size=self._full_size(frame_size))
        width, height = window.gen_size
        if smaller.gen_size[0] * smaller.gen_size[1] >= width * height:
            self._smaller_calls = 0
            return None
        self._smaller_calls += 1
        if self._smaller_calls < SHRINK_AFTER:
            return None
        self._smaller_calls = 0
        logger.info("the person fits a smaller generation window: a new chain in %s", smaller)
        return smaller

    def _scale_kept(self, frame_size: tuple[int, int]) -> None:
        """The kept frames and their person boxes at a new camera frame size."""
        old_w, old_h = self._window_frame or frame_size
        sx, sy = frame_size[0] / old_w, frame_size[1] / old_h
        self._kept = [cv2.resize(frame, frame_size, interpolation=cv2.INTER_AREA)
                      for frame in self._kept]
        self._kept_people = [PersonBox(b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy)
                             for b in self._kept_people]

    def _choose_window(self, people: Sequence[PersonBox], frame_size: tuple[int, int]
                       ) -> Window:
        full = self._full_size(frame_size)
        if not self._windowed:
            return whole_frame(frame_size, full)
        window = choose_window(people, frame_size, full_gen_size=full)
        logger.debug("generating %s of the %dx%d frame at %dx%d", window.box, *frame_size,
                     *window.gen_size)
        return window

    def reset(self) -> None:
        super().reset()
        self._forget_chain()
        self.preprocessor.reset()

    def _forget_chain(self) -> None:
        self._smaller_calls = 0
        self._window = None
        self._window_frame = None
        self._kept = []
        self._kept_people = []

    def close(self) -> None:
        # The preprocessor holds models too (detector, pose, SAM2).
        self.preprocessor = StandInPreprocessor()
        self._prompt_embeds = None
        compositor, self._compositor = self._compositor, None
        if compositor is not None:
            compositor.shutdown(wait=True)
        super().close()


def compositing_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def compositor() -> ThreadPoolExecutor:
    """The threads a batch's frames are composited on, side by side: OpenCV lets go of the
    GIL while it works."""
    return ThreadPoolExecutor(max_workers=compositing_threads(),
                              thread_name_prefix="wan-composite")


def paste(frame: np.ndarray, pixels: np.ndarray, mask: np.ndarray, window: Window, *,
          feather_px: int, colour_match: bool = False) -> tuple[np.ndarray, Box]:
    """One generated frame (RGB, the window's generation size) composited into its camera
    frame (BGR) through the person mask, and the box it changed."""
    frame_size = (frame.shape[1], frame.shape[0])
    x, y, width, height = window.box
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    # Only the person is replaced: the room stays the camera's own pixels.
    region = frame[y:y + height, x:x + width]
    if colour_match:
        bgr = match_colour(bgr, region, mask)
    blend = mask if window.whole else open_inner_sides(mask, window.inner_sides(frame_size))
    if window.whole:
        whole, (bx, by, bw, bh) = composite(region, bgr, blend, feather_px=feather_px)
    else:
        # Blended straight into the output frame's window: no copy of the window on the way.
        whole = frame.copy()
        _, (bx, by, bw, bh) = composite(whole[y:y + height, x:x + width], bgr, blend,
                                        feather_px=feather_px, in_place=True)
    return whole, ((bx + x, by + y, bw, bh) if bw and bh else (0, 0, 0, 0))


def paste_batch(executor: ThreadPoolExecutor, frames: Sequence[np.ndarray],
                generated: Sequence[np.ndarray] | np.ndarray, masks: Sequence[np.ndarray],
                window: Window,
                *, feather_px: int, colour_match: bool = False
                ) -> tuple[list[np.ndarray], list[Box]]:
    """:func:`paste` for each frame of a batch, on ``executor``'s threads, in order."""
    def one(frame: np.ndarray, pixels: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Box]:
        return paste(frame, pixels, mask, window, feather_px=feather_px,
                     colour_match=colour_match)

    if not len(frames) == len(generated) == len(masks):
        raise EngineError(f"{len(generated)} generated frames and {len(masks)} masks for "
                          f"{len(frames)} camera frames")
    pasted = list(executor.map(one, frames, generated, masks))
    return [frame for frame, _ in pasted], [box for _, box in pasted]


def load_options(options: dict[str, Any]) -> LoadOptions:
    device = options.get("device", "auto")
    quantize = str(options.get("quantize", defaults.QUANTIZE))
    if quantize != defaults.Quantize.NONE and "quantize" in (options.get(FROM_PRESET) or ()):
        quantize = runnable_quantize(quantize, pick_device(device), explicit=False)
    return LoadOptions(
        device=device, dtype=options.get("dtype", "auto"),
        vae_fp32=options.get("vae_fp32", False), offload=options.get("offload", "none"),
        vae_tiling=options.get("vae_tiling", False),
        attention_backend=options.get("attention_backend"),
        compile=options.get("compile", False),
        loras=[parse_lora(spec) for spec in options.get("loras", [])],
        shift=options.get("shift"), quantize=quantize)


def _stream_options(options: dict[str, Any]) -> dict[str, Any]:
    return {"mode": options.get("mode", defaults.MODE),
            "steps": options.get("steps", defaults.STEPS),
            "segment_frames": options.get("segment_frames", defaults.SEGMENT_FRAMES),
            "carry": options.get("carry", defaults.CARRY),
            "seed": options.get("seed", defaults.SEED),
            "prompt": options.get("prompt", defaults.PROMPT),
            "guidance_scale": options.get("guidance_scale", defaults.GUIDANCE_SCALE)}


def resolved_options(options: dict[str, Any]) -> dict[str, Any]:
    """The engine options with the preset applied (``--preset``: see models/wan/presets.py);
    a preset that does not fit the explicit options is an EngineError saying which."""
    try:
        return apply_preset(options, wan_presets.ENGINE)
    except ValueError as exc:
        raise EngineError(str(exc)) from exc


def create_preprocessor(options: dict[str, Any]) -> Preprocessor:
    """The preprocessing ``options`` ask for (the preset already applied)."""
    models = preprocessing_models(options)
    if not models:
        return StandInPreprocessor()
    from faceswap_cam.models.preprocessing.wan import WanPreprocessor

    person_mask = defaults.PersonMask(options.get("person_mask") or defaults.PERSON_MASK)
    try:
        return WanPreprocessor.load(
            detector_model=options.get("detector_model", defaults.DETECTOR_REPO),
            pose_model=options.get("pose_model", defaults.POSE_REPO),
            sam2_model=(options.get("sam2_model", defaults.SAM2_REPO)
                        if "sam2" in models else None),
            person_mask=person_mask, device=options.get("device", "auto"))
    except (WeightsError, OSError, ValueError, RuntimeError) as exc:
        raise EngineError(f"preprocessing models cannot be loaded: {exc}") from exc


def create(**options: Any) -> WanAnimateEngine:
    """Engine factory: daemon settings -> engine (see ``engine_options`` in the daemon)."""
    options = resolved_options(options)
    gen_size = options.get("gen_size")
    return WanAnimateEngine(
        wan_model=options.get("wan_model", defaults.WAN_ANIMATE_REPO), load=load_options(options),
        gen_size=None if gen_size is None else (int(gen_size[0]), int(gen_size[1])),
        gen_short_side=int(options.get("gen_short_side", defaults.GEN_SHORT_SIDE)),
        preprocessor=create_preprocessor(options),
        colour_match=bool(options.get("colour_match", False)),
        feather_px=int(options.get("feather_px", defaults.FEATHER_PX)),
        gen_window=str(options.get("gen_window", defaults.GEN_WINDOW)),
        **_stream_options(options))


def create_stream(options: dict[str, Any], *, width: int, height: int) -> StreamingWanAnimate:
    """A bare streaming generator at ``width`` x ``height`` (offline rendering)."""
    options = resolved_options(options)
    pipe = load_pipeline(options.get("wan_model", defaults.WAN_ANIMATE_REPO),
                         load_options(options))
    return StreamingWanAnimate(pipe, height=height, width=width, **_stream_options(options))


def open_inner_sides(mask: np.ndarray, sides: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """``mask`` with its outermost row or column cleared on each window side inside the frame
    (left, top, right, bottom): the feather then ramps the person out towards that side, so
    should the mask reach it, the generated person fades into the camera's own picture there
    instead of ending in a hard edge. A person leaving the window starts a new one long before
    (``Window.holds``); this is the safety net."""
    if not any(sides):
        return mask
    opened = np.array(mask, copy=True)
    left, top, right, bottom = sides
    if left:
        opened[:, 0] = 0
    if top:
        opened[0, :] = 0
    if right:
        opened[:, -1] = 0
    if bottom:
        opened[-1, :] = 0
    return opened


def _to_frame(rgb: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """A generated RGB frame as a camera frame: BGR, at the camera's size."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if (bgr.shape[1], bgr.shape[0]) != frame_size:
        bgr = cv2.resize(bgr, frame_size, interpolation=cv2.INTER_LINEAR)
    return bgr
