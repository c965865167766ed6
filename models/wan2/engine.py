"""The ``wan-animate-2`` swap engine: camera frames -> streaming Wan-Animate-2 -> camera frames.

No preprocessing: the BGR camera frames, turned to RGB, are the pipeline's driving video as
they are (the pipeline letterboxes them itself). Nothing is composited either: Wan-Animate-2
has no replace mode and generates the whole frame, the reference character in the reference's
own scene. Its frames have the reference image's aspect (the pipeline's rule); they are fitted
into the camera frame, scaled to fill it when the aspects agree and with black bars when they do
not, never stretched.

Imported only by the engine factory (it pulls in torch and diffusers).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import PIL.Image
import torch

from faceswap_cam.models import defaults
from faceswap_cam.models.engine import EngineError, GenerationWindow, SwapResult
from faceswap_cam.models.presets import apply_preset
from faceswap_cam.models.wan.engine import load_options
from faceswap_cam.models.wan.loading import LoadOptions, pick_device
from faceswap_cam.models.wan.stream_engine import StreamingSwapEngine, engine_errors
from faceswap_cam.models.wan2.loading import load_pipeline
from faceswap_cam.models.wan2.presets import ENGINE
from faceswap_cam.models.wan2.streaming import StreamingWanAnimate2
from faceswap_cam.models.wan2.variants import MODEL_SETTING, REPOS, variant_of
from faceswap_cam.models.weights import WeightsError

logger = logging.getLogger(__name__)

MEMORY_ADVICE = "reduce memory with fewer --segment-frames, a smaller --gen-size or --dtype bf16"


def fit_into(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """``frame`` scaled to fit ``width`` x ``height`` with its aspect kept, centred on black."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    # Within a pixel of the target: a plain resize, no one-pixel bars.
    if abs(new_w - width) <= 1 and abs(new_h - height) <= 1:
        return cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top:top + new_h, left:left + new_w] = cv2.resize(
        frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out


def driving_images(frames: Sequence[np.ndarray]) -> list[PIL.Image.Image]:
    """BGR camera frames as the pipeline's driving video."""
    return [PIL.Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)) for frame in frames]


def camera_frames(generated: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int]
                  ) -> list[np.ndarray]:
    """Generated RGB frames as BGR camera frames of ``size`` (W, H)."""
    return [fit_into(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), *size) for pixels in generated]


class WanAnimate2Engine(StreamingSwapEngine):
    """:class:`~faceswap_cam.models.engine.SwapEngine` over :class:`StreamingWanAnimate2`.

    ``first_batch`` is the segment length L, ``next_batch`` L - P. Every batch is swapped (the
    model needs no person detector, so there is no "nobody in view" here); the caller decides
    when a chain restarts (``reset()``).
    """

    def __init__(
        self,
        *,
        pipeline: Any,
        steps: int,
        segment_frames: int,
        carry: int = 1,
        seed: int = defaults.SEED,
        prompt: str = "",
        gen_size: tuple[int, int] | None = None,
        gen_short_side: int = defaults.GEN_SHORT_SIDE,
        max_sequence_length: int = 512,
    ) -> None:
        super().__init__(pipeline, {
            "steps": steps, "segment_frames": segment_frames, "carry": carry, "seed": seed,
            "prompt": prompt, "max_sequence_length": max_sequence_length},
            segment_frames=segment_frames, carry=carry, gen_size=gen_size,
            gen_short_side=gen_short_side)

    def _new_stream(self, width: int, height: int) -> StreamingWanAnimate2:
        return StreamingWanAnimate2(self.pipe, height=height, width=width, **self._options)

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        if not frames:
            return SwapResult([])
        stream = self._stream_for(frames)
        frame_h, frame_w = frames[0].shape[:2]
        with engine_errors():
            generated = stream.generate_uint8(driving_images(frames))
        # The whole frame, fitted into the generation size.
        self.generation_window = GenerationWindow(0, 0, frame_w, frame_h, stream.width,
                                                  stream.height)
        return SwapResult(camera_frames(generated, (frame_w, frame_h)))


def preset_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with the preset's values (the engine's default preset, balanced, if none)
    wherever the user gave none. The daemon lists what was given in ``options["explicit"]``;
    a caller that does not (tests, scripts) gave everything it passed."""
    return apply_preset(options, ENGINE)


def stream_settings(options: dict[str, Any]) -> dict[str, Any]:
    """Steps and segment geometry from the preset, each overridden by a value the user gave."""
    return _geometry(preset_options(options))


def _geometry(resolved: dict[str, Any]) -> dict[str, Any]:
    # A gen_size the user gave keeps the preset's short side out (and wins over it).
    return {"steps": int(resolved["steps"]), "segment_frames": int(resolved["segment_frames"]),
            "carry": int(resolved["carry"]),
            "gen_short_side": int(resolved.get("gen_short_side") or defaults.GEN_SHORT_SIDE)}


def compiled_on_gpus(options: dict[str, Any], load: LoadOptions) -> LoadOptions:
    """``--compile`` on by default on a CUDA GPU: Wan-Animate-2's generation attention runs
    on flex attention, which is memory-efficient only compiled (uncompiled, quality's
    attention scores at 848x480 alone would take ~27 GB). A ``compile`` the user gave wins."""
    explicit = options.get("explicit")
    given = ("compile" in explicit) if explicit is not None else ("compile" in options)
    if given or load.compile or not pick_device(load.device).startswith("cuda"):
        return load
    logger.info("wan-animate-2 on %s: compiling its transformer blocks (--no-compile to "
                "skip; the first batch then takes a minute longer)", load.device)
    return dataclasses.replace(load, compile=True)


#: wan-animate's settings that mean nothing here: this engine takes the raw camera frames (no
#: preprocessing) and generates the whole picture (nothing is composited into the room).
WAN_ANIMATE_ONLY = ("mode", "preprocessor", "colour_match", "feather_px", "gen_window",
                    "person_mask", "wan_model",
                    "detector_model", "pose_model", "sam2_model")


def ignored_settings(options: Mapping[str, Any]) -> list[str]:
    """The wan-animate-only settings the user gave (``options["explicit"]``)."""
    return [name for name in WAN_ANIMATE_ONLY if name in (options.get("explicit") or ())]


def create(**options: Any) -> WanAnimate2Engine:
    """Engine factory: daemon settings -> engine."""
    ignored = ignored_settings(options)
    if ignored:
        logger.warning("wan-animate-2 ignores %s: it takes the camera frames as they are and "
                       "generates the whole picture (they are wan-animate's settings)",
                       ", ".join(f"--{name.replace('_', '-')}" for name in ignored))
    try:
        variant = variant_of(options)
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    model = str(options.get(MODEL_SETTING) or REPOS[variant])
    try:
        resolved = preset_options(options)
        geometry = _geometry(resolved)  # a bad setting fails here, not after the long load
        pipe = load_pipeline(model, variant,
                             compiled_on_gpus(options, load_options(resolved)))
    except WeightsError as exc:
        raise EngineError(str(exc)) from exc
    except torch.OutOfMemoryError as exc:
        raise EngineError(f"out of GPU memory while loading Wan-Animate-2: {MEMORY_ADVICE}") \
            from exc
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    gen_size = options.get("gen_size")
    logger.info("wan-animate-2 (%s checkpoint) ready", variant)
    return WanAnimate2Engine(
        pipeline=pipe, seed=int(options.get("seed", defaults.SEED)),
        prompt=str(options.get("prompt", defaults.PROMPT)),
        gen_size=None if gen_size is None else (int(gen_size[0]), int(gen_size[1])),
        # The prompt length the checkpoint's transformer was built for (512 released).
        max_sequence_length=int(pipe.transformer.config.get("text_len", 512)), **geometry)

