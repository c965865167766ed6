"""The engines the plan knows a model for: what it knows of each without building it, their
presets, the shape and quantization of a preset's rows."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from faceswap_cam.models.batching import generation_size
from faceswap_cam.models.plan.animate import ANIMATE_14B_PARAMS, analytic_work
from faceswap_cam.models.plan.animate2 import ANIMATE_2_14B_PARAMS, analytic_animate_2_work
from faceswap_cam.models.plan.gpus import Gpu
from faceswap_cam.models.plan.memory import activation_bytes, animate_2_activation_bytes
from faceswap_cam.models.plan.work import Params, Shape, Work
from faceswap_cam.models.presets import Preset, presets_for
from faceswap_cam.models.quantize import FP8_MIN_CAPABILITY

#: Engines the plan knows a model for, with the package whose ``presets`` module registers
#: their presets.
PLANNED_ENGINES: dict[str, str] = {"wan-animate": "faceswap_cam.models.wan",
                                   "wan-animate-2": "faceswap_cam.models.wan2"}


@dataclass(frozen=True)
class EngineModel:
    """What the plan knows of an engine's model without building it."""

    params: Params
    analytic_work: Callable[[Shape], Work]
    activation_bytes: Callable[[Shape], float]


ENGINE_MODELS: dict[str, EngineModel] = {
    "wan-animate": EngineModel(ANIMATE_14B_PARAMS, analytic_work, activation_bytes),
    "wan-animate-2": EngineModel(ANIMATE_2_14B_PARAMS, analytic_animate_2_work,
                                 animate_2_activation_bytes),
}


#: Engines that generate a window around the person in replace mode (models/wan/window.py):
#: their plan has a row for the square window beside each whole-frame size.
WINDOWED_ENGINES = frozenset({"wan-animate"})


def square_window(size: tuple[int, int]) -> tuple[int, int]:
    """The generation size of the square window around a person, for a frame generated at
    ``size``: the same short side (a centred head-and-shoulders shot fits one)."""
    side = min(size)
    return side, side


def preset_quantize(preset: Preset) -> str:
    return str(getattr(preset, "quantize", None) or "none")


def load_presets(engine: str) -> list[Preset]:
    """The engine's presets, importing the module that registers them."""
    package = PLANNED_ENGINES.get(engine)
    if package and importlib.util.find_spec(f"{package}.presets") is not None:
        importlib.import_module(f"{package}.presets")
    return presets_for(engine)


def planned_engines() -> list[str]:
    return [engine for engine in PLANNED_ENGINES if load_presets(engine)]


def preset_shape(preset: Preset, frame_size: tuple[int, int] = (1280, 720)) -> Shape:
    width, height = generation_size(frame_size, preset.gen_short_side)
    return Shape(width, height, preset.segment_frames - preset.carry, preset.segment_frames)


def as_run(quantize: str, gpu: Gpu) -> str:
    """A preset's ``quantize`` as the daemon runs it on ``gpu``: fp8 unquantized where the GPU
    has none (quantize.runnable_quantize)."""
    return "none" if quantize == "fp8" and not gpu.fp8_tflops else quantize


def engine_quantize(engine: str, preset: Preset, quantize: str, gpu: Gpu) -> str:
    """What a row of ``engine`` runs for ``--quantize quantize`` (auto: the preset's own).
    An fp8 the GPU lacks is planned as int8 here; what a user asks for is checked first
    (:func:`fp8_refused`), as the daemon refuses it there."""
    if quantize == "auto":
        return as_run(preset_quantize(preset), gpu)
    return "int8" if quantize == "fp8" and not gpu.fp8_tflops else quantize


def fp8_refused(quantize: str, gpu: Gpu) -> str | None:
    """Why ``--quantize fp8`` cannot run on ``gpu`` (and what to use), or None when it can."""
    if quantize != "fp8" or gpu.fp8_tflops:
        return None
    major, minor = FP8_MIN_CAPABILITY
    return (f"--quantize fp8 needs FP8 tensor cores (compute capability {major}.{minor} or "
            f"newer: Ada, Hopper, Blackwell), which the {gpu.name} lacks, so the daemon "
            "refuses it there: use --quantize int8, or leave it out (each preset as the "
            "daemon runs it there)")
