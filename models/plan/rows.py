"""The plan's rows: a row per engine, preset, generation size and segment length, counted on
the meta-device models."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from faceswap_cam.models import defaults
from faceswap_cam.models.plan.engines import (
    ENGINE_MODELS,
    WINDOWED_ENGINES,
    engine_quantize,
    load_presets,
    planned_engines,
    preset_shape,
    square_window,
)
from faceswap_cam.models.plan.gpus import (
    ASSUMED_SCALING_EFFICIENCY,
    Efficiency,
    Gpu,
    Scaling,
    load_efficiency,
    load_scaling,
)
from faceswap_cam.models.plan.host import HostCost, load_host_cost
from faceswap_cam.models.plan.memory import GB, RUNTIME_BYTES, activation_bytes, weight_bytes
from faceswap_cam.models.plan.meta_models import MetaModels, build_meta_models
from faceswap_cam.models.plan.preprocessing import (
    PreprocessEfficiency,
    load_preprocess_efficiency,
    preprocess_flops,
    preprocess_seconds,
    stages_for,
)
from faceswap_cam.models.plan.timing import CAMERA_FPS, predict_timing
from faceswap_cam.models.plan.work import Shape, Work
from faceswap_cam.models.presets import Preset


@dataclass
class PlanRow:
    engine: str
    preset: str
    width: int
    height: int
    segment_frames: int
    carry: int
    steps: int
    forwards_per_step: int
    quantize: str
    tflop_per_forward: float  # one denoising forward
    tflop_per_new_frame: float  # DiT only: a batch's transformer FLOPs / (L - P)
    dit_tflop_per_batch: float  # steps x forwards x forward (+ wan-animate-2's reference pass)
    vae_tflop_per_batch: float
    vae_share: float  # of the batch's predicted time
    #: The new frames' preprocessing models on the GPU (plan/preprocessing.py): which, their
    #: FLOPs and predicted seconds (part of batch_s), and whether their efficiency is assumed.
    preprocess_models: str
    preprocess_tflop_per_batch: float
    preprocess_s: float
    assumed_preprocess_efficiency: bool
    #: The CPU's work in the batch call (plan/host.py; part of batch_s), assumed or measured.
    host_s: float
    assumed_host: bool
    flops_source: str
    gpu: str
    gpus: int
    efficiency: float
    assumed_efficiency: bool
    scaling_efficiency: float | None  # None: one GPU
    assumed_scaling_efficiency: bool
    batch_s: float
    engine_fps: float
    cadence: int
    spare: float  # of the time between batches at this cadence, unused by a batch
    fps: float
    latency_s: float
    weights_gb: float
    activations_gb: float
    memory_gb: float
    fits: bool
    preset_size: bool  # the preset's own size and segment length
    #: "frame": the whole frame at this size; "person": the square window around the person
    #: that replace mode generates when the person fits one.
    gen_window: str = "frame"


def row_for(preset: Preset, shape: Shape, work: Work, *, gpu: Gpu, efficiency: Efficiency,
            quantize: str, gpus: int, camera_fps: float, weights: float | None,
            preset_size: bool, scaling: Scaling | None = None,
            preprocess: PreprocessEfficiency, host: HostCost, gen_window: str = "frame",
            person_mask: str | None = None, mode: str = defaults.MODE,
            preprocessor: str = defaults.PREPROCESSOR) -> PlanRow:
    """``preprocess``: the preprocessing's efficiency; ``host``: the engine's CPU work a
    frame; ``person_mask`` (else the preset's), ``mode`` and ``preprocessor`` say which
    preprocessing models run."""
    scaling_efficiency = scaling.efficiency if scaling else ASSUMED_SCALING_EFFICIENCY
    cfg = preset.guidance_scale > 1.0
    dit_batch = work.dit_per_batch(preset.steps, cfg)[0]
    stages = stages_for(preset.engine, person_mask or preset.person_mask, mode, preprocessor)
    timing = predict_timing(work, steps=preset.steps, guidance_scale=preset.guidance_scale,
                            segment=shape.segment, carry=shape.segment - shape.new_frames,
                            gpu=gpu, efficiency=efficiency, quantize=quantize, gpus=gpus,
                            scaling_efficiency=scaling_efficiency, camera_fps=camera_fps,
                            preprocess_s=preprocess_seconds(stages, shape.new_frames, gpu,
                                                            preprocess),
                            host_s=host.seconds(shape.new_frames, mode))
    model = ENGINE_MODELS.get(preset.engine)
    activations = model.activation_bytes(shape) if model else activation_bytes(shape)
    memory = (weights or 0.0) + activations + RUNTIME_BYTES
    return PlanRow(
        engine=preset.engine, preset=preset.name.value, width=shape.width, height=shape.height,
        segment_frames=shape.segment, carry=shape.segment - shape.new_frames, steps=preset.steps,
        forwards_per_step=2 if cfg else 1, quantize=quantize,
        tflop_per_forward=work.dit_flops / 1e12,
        tflop_per_new_frame=dit_batch / shape.new_frames / 1e12,
        dit_tflop_per_batch=dit_batch / 1e12,
        vae_tflop_per_batch=work.vae_flops / 1e12,
        vae_share=timing.vae_s / timing.batch_s,
        preprocess_models="+".join(stage.name for stage in stages),
        preprocess_tflop_per_batch=preprocess_flops(stages, shape.new_frames) / 1e12,
        preprocess_s=timing.preprocess_s,
        assumed_preprocess_efficiency=preprocess.assumed_for(stages),
        host_s=timing.host_s, assumed_host=host.assumed,
        flops_source=work.source, gpu=gpu.key,
        gpus=gpus, efficiency=efficiency.dit, assumed_efficiency=efficiency.assumed,
        scaling_efficiency=scaling_efficiency if gpus > 1 else None,
        assumed_scaling_efficiency=gpus > 1 and (scaling is None or scaling.assumed),
        batch_s=timing.batch_s,
        engine_fps=timing.engine_fps, cadence=timing.cadence, spare=timing.spare,
        fps=timing.fps,
        latency_s=timing.latency_s, weights_gb=(weights or 0.0) / GB,
        activations_gb=activations / GB, memory_gb=memory / GB,
        fits=memory / GB <= gpu.memory_gb, preset_size=preset_size, gen_window=gen_window)


DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((848, 480), (1280, 720))
#: With each engine's own presets' lengths added (wan-animate-2's live preset runs L = 5).
DEFAULT_SEGMENTS: tuple[int, ...] = (9, 17)


def build_plan(gpu: Gpu, *, engines: Sequence[str] | None = None,
               sizes: Iterable[tuple[int, int]] = DEFAULT_SIZES,
               segments: Iterable[int] | None = None, quantize: str = "auto",
               gpus: int = 1, camera_fps: float = CAMERA_FPS,
               efficiency_file: Path | None = None, presets_only: bool = False
               ) -> list[PlanRow]:
    """A row per engine x preset x size x segment length (``presets_only``: each preset at
    its own size and length; ``segments`` None: :data:`DEFAULT_SEGMENTS` and the engine's
    presets' lengths). Lengths too short to carry a preset's frames are left out. FLOPs are
    counted once per shape."""
    sizes = list(sizes)
    scaling = load_scaling(gpu, gpus, efficiency_file) if gpus > 1 else None
    preprocess = load_preprocess_efficiency(gpu, efficiency_file)
    rows: list[PlanRow] = []
    shared: MetaModels | None = None
    for engine in engines if engines is not None else planned_engines():
        presets = load_presets(engine)
        if not presets:
            continue
        efficiency = load_efficiency(gpu, efficiency_file, engine)
        host = load_host_cost(engine, efficiency_file)
        models = build_meta_models(engine)
        if shared is None:
            shared = models
        else:
            models.share_vae(shared)
        lengths = sorted(set(DEFAULT_SEGMENTS) | {p.segment_frames for p in presets}) \
            if segments is None else list(segments)
        for preset in presets:
            own = preset_shape(preset)
            shapes = [(own, "frame")] if presets_only else []
            if not presets_only:
                for size in sizes:
                    windows = [(size, "frame")]
                    if engine in WINDOWED_ENGINES and square_window(size) != size:
                        windows.append((square_window(size), "person"))
                    for (width, height), window in windows:
                        for segment in lengths:
                            if segment - preset.carry >= preset.carry:
                                shapes.append((Shape(width, height, segment - preset.carry,
                                                     segment), window))
                if (own, "frame") not in shapes:
                    shapes.insert(0, (own, "frame"))
            q = engine_quantize(engine, preset, quantize, gpu)
            for shape, window in shapes:
                rows.append(row_for(
                    preset, shape, models.work(shape), gpu=gpu, efficiency=efficiency,
                    quantize=q, gpus=gpus, camera_fps=camera_fps,
                    weights=weight_bytes(models.params, q),
                    preset_size=shape == own and window == "frame", scaling=scaling,
                    gen_window=window, preprocess=preprocess, host=host))
    return rows
