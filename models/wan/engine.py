"""The ``wan-animate`` swap engine: preprocessing -> streaming Wan-Animate -> camera frames.

Imported only by the engine factory (it pulls in torch and diffusers).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import PIL.Image
import torch

from faceswap_cam.models import defaults
from faceswap_cam.models.batching import generation_size
from faceswap_cam.models.engine import EngineError, SwapResult
from faceswap_cam.models.preprocessing.base import Preprocessor, StandInPreprocessor
from faceswap_cam.models.presets import apply_preset
from faceswap_cam.models.quantize import QuantizeError
from faceswap_cam.models.reference import ReferenceError, check_reference
from faceswap_cam.models.wan import presets as wan_presets
from faceswap_cam.models.wan.compositing import composite, match_colour
from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline, parse_lora
from faceswap_cam.models.wan.streaming import SegmentInputs, StreamingWanAnimate
from faceswap_cam.models.weights import WeightsError

logger = logging.getLogger(__name__)

MEMORY_ADVICE = ("reduce memory with --offload model (or sequential), --vae-tiling, fewer "
                 "--segment-frames, a smaller --gen-size, or --dtype bf16")


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Out of GPU memory and bad segment input become EngineError with the fix."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise EngineError(f"out of GPU memory: {MEMORY_ADVICE}") from exc
    except ValueError as exc:
        raise EngineError(str(exc)) from exc


def to_pil(frames: Sequence[np.ndarray], mode: str = "RGB") -> list[PIL.Image.Image]:
    return [PIL.Image.fromarray(np.ascontiguousarray(f), mode=mode) for f in frames]


class WanAnimateEngine:
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
        self._options: dict[str, Any] = {
            "mode": mode, "steps": steps, "segment_frames": segment_frames, "carry": carry,
            "seed": seed, "prompt": prompt, "guidance_scale": guidance_scale}
        self.pipe = pipe
        self.preprocessor: Preprocessor = preprocessor or StandInPreprocessor()
        self.colour_match = colour_match
        self.feather_px = feather_px
        self.mode = mode
        self.gen_short_side = gen_short_side
        self.first_batch = segment_frames
        self.next_batch = segment_frames - carry
        self._stream: StreamingWanAnimate | None = None
        self._reference: PIL.Image.Image | None = None
        self._interrupted = False
        if gen_size is not None:
            self._stream = self._make_stream(gen_size)

    def _make_stream(self, size: tuple[int, int]) -> StreamingWanAnimate:
        width, height = size
        with engine_errors():
            stream = StreamingWanAnimate(self.pipe, height=height, width=width, **self._options)
            if self._reference is not None:
                stream.set_reference(self._reference)
        return stream

    def set_reference(self, image: np.ndarray) -> None:
        try:
            check_reference(image)
        except ReferenceError as exc:
            raise EngineError(str(exc)) from exc
        reference = PIL.Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if self._stream is not None:
            with engine_errors():
                self._stream.set_reference(reference)
        # Kept only once encoded: a refused image must not come back with a later stream.
        self._reference = reference

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        if not frames:
            return SwapResult([])
        if self._reference is None:
            raise EngineError("no reference face is set: start with --reference IMAGE")
        frame_h, frame_w = frames[0].shape[:2]
        if self._stream is None:
            self._stream = self._make_stream(generation_size((frame_w, frame_h),
                                                             self.gen_short_side))
        stream = self._stream
        if self._interrupted:
            stream.interrupt()  # interrupt() came before this stream existed
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
        masks = batch.mask if self.mode == "replace" else None
        for i, pixels in enumerate(uint8_frames(video)):
            bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
            if masks is not None:
                # Only the person is replaced: the room stays the camera's own pixels.
                if self.colour_match:
                    bgr = match_colour(bgr, frames[i], masks[i])
                out.append(composite(frames[i], bgr, masks[i], feather_px=self.feather_px))
                continue
            if bgr.shape[:2] != (frame_h, frame_w):
                bgr = cv2.resize(bgr, (frame_w, frame_h), interpolation=cv2.INTER_LINEAR)
            out.append(bgr)
        return SwapResult(out)

    def reset(self) -> None:
        self._interrupted = False
        if self._stream is not None:
            self._stream.reset()
        self.preprocessor.reset()

    def interrupt(self) -> None:
        # The flag covers a call that is still creating its stream; the stream's own flag
        # stops its denoising loop at the next step.
        self._interrupted = True
        stream = self._stream
        if stream is not None and stream.pipe is not None:  # None: closed, nothing runs
            stream.interrupt()

    def close(self) -> None:
        """Drop every reference to the models, so a restarted engine does not find the GPU
        still holding this one (the stream and the preprocessor hold models too)."""
        import gc

        if self._stream is not None:
            self._stream.pipe = None
        self._stream = None
        self.pipe = None
        self.preprocessor = StandInPreprocessor()
        gc.collect()  # a failed call's traceback forms a cycle that still holds the models
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


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
