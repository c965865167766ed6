"""The ``wan-animate`` swap engine: preprocessing -> streaming Wan-Animate -> camera frames.

Imported only by the engine factory (it pulls in torch and diffusers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import PIL.Image
import torch

from faceswap_cam.models import defaults
from faceswap_cam.models.engine import Box, EngineError, SwapResult
from faceswap_cam.models.preprocessing.base import Preprocessor, StandInPreprocessor
from faceswap_cam.models.presets import apply_preset
from faceswap_cam.models.quantize import QuantizeError
from faceswap_cam.models.wan import presets as wan_presets
from faceswap_cam.models.wan.compositing import composite, match_colour
from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline, parse_lora
from faceswap_cam.models.wan.stream_engine import (
    MEMORY_ADVICE,
    StreamingSwapEngine,
    engine_errors,
)
from faceswap_cam.models.wan.streaming import SegmentInputs, StreamingWanAnimate
from faceswap_cam.models.weights import WeightsError

logger = logging.getLogger(__name__)

def to_pil(frames: Sequence[np.ndarray], mode: str = "RGB") -> list[PIL.Image.Image]:
    return [PIL.Image.fromarray(np.ascontiguousarray(f), mode=mode) for f in frames]


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
    ) -> None:
        try:
            pipe = pipeline if pipeline is not None else load_pipeline(wan_model,
                                                                       load or LoadOptions())
        except (WeightsError, QuantizeError) as exc:
            raise EngineError(str(exc)) from exc
        except torch.OutOfMemoryError as exc:
            raise EngineError(f"out of GPU memory while loading Wan-Animate: {MEMORY_ADVICE}") \
                from exc
        super().__init__(pipe, {
            "mode": mode, "steps": steps, "segment_frames": segment_frames, "carry": carry,
            "seed": seed, "prompt": prompt, "guidance_scale": guidance_scale},
            segment_frames=segment_frames, carry=carry, gen_size=gen_size,
            gen_short_side=gen_short_side)
        self.preprocessor: Preprocessor = preprocessor or StandInPreprocessor()
        self.colour_match = colour_match
        self.feather_px = feather_px
        self.mode = mode

    def _new_stream(self, width: int, height: int) -> StreamingWanAnimate:
        return StreamingWanAnimate(self.pipe, height=height, width=width, **self._options)

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        if not frames:
            return SwapResult([])
        stream = self._stream_for(frames)
        frame_h, frame_w = frames[0].shape[:2]
        face_size = int(self.pipe.transformer.config.motion_encoder_size)
        batch = self.preprocessor.process(frames, size=(stream.width, stream.height),
                                          face_size=face_size,
                                          with_background=self.mode == "replace")
        if not batch.present:
            # Nobody to swap: never invent a person. The frames go back as they came; the
            # caller ends the segment chain (resets) before the next batch.
            return SwapResult.untouched(frames)
        inputs = SegmentInputs(
            pose=to_pil(batch.pose), face=to_pil(batch.face),
            background=None if batch.background is None else to_pil(batch.background),
            mask=None if batch.mask is None else to_pil(batch.mask, "L"))
        with engine_errors():
            video = stream.generate(inputs)
        out = []
        boxes: list[Box] = []
        masks = batch.mask if self.mode == "replace" else None
        for i, pixels in enumerate(uint8_frames(video)):
            bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
            if masks is not None:
                # Only the person is replaced: the room stays the camera's own pixels.
                if self.colour_match:
                    bgr = match_colour(bgr, frames[i], masks[i])
                frame, box = composite(frames[i], bgr, masks[i], feather_px=self.feather_px)
                out.append(frame)
                boxes.append(box)
                continue
            if bgr.shape[:2] != (frame_h, frame_w):
                bgr = cv2.resize(bgr, (frame_w, frame_h), interpolation=cv2.INTER_LINEAR)
            out.append(bgr)
        # Animation repaints the whole frame; replacement only the person's box.
        return SwapResult(out, changed=boxes if masks is not None else None)

    def reset(self) -> None:
        super().reset()
        self.preprocessor.reset()

    def close(self) -> None:
        # The preprocessor holds models too (detector, pose, SAM2).
        self.preprocessor = StandInPreprocessor()
        super().close()


def load_options(options: dict[str, Any]) -> LoadOptions:
    return LoadOptions(
        device=options.get("device", "auto"), dtype=options.get("dtype", "auto"),
        vae_fp32=options.get("vae_fp32", False), offload=options.get("offload", "none"),
        vae_tiling=options.get("vae_tiling", False),
        attention_backend=options.get("attention_backend"),
        compile=options.get("compile", False),
        loras=[parse_lora(spec) for spec in options.get("loras", [])],
        shift=options.get("shift"), quantize=options.get("quantize", defaults.QUANTIZE))


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
    if options.get("preprocessor", defaults.PREPROCESSOR) == "stand-in":
        return StandInPreprocessor()
    from faceswap_cam.models.preprocessing.wan import WanPreprocessor

    try:
        return WanPreprocessor.load(
            detector_model=options.get("detector_model", defaults.DETECTOR_REPO),
            pose_model=options.get("pose_model", defaults.POSE_REPO),
            sam2_model=(options.get("sam2_model", defaults.SAM2_REPO)
                        if options.get("mode", defaults.MODE) == "replace" else None),
            device=options.get("device", "auto"))
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
        **_stream_options(options))


def create_stream(options: dict[str, Any], *, width: int, height: int) -> StreamingWanAnimate:
    """A bare streaming generator at ``width`` x ``height`` (offline rendering)."""
    options = resolved_options(options)
    pipe = load_pipeline(options.get("wan_model", defaults.WAN_ANIMATE_REPO),
                         load_options(options))
    return StreamingWanAnimate(pipe, height=height, width=width, **_stream_options(options))


def uint8_frames(video: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8, rounded the way the diffusers exporters do."""
    return np.asarray((np.clip(video, 0, 1) * 255).round(), dtype=np.uint8)
