"""The plan without torch (analytic FLOPs, the known parameter counts): ``doctor``'s rows and
the daemon's prediction for its own settings, from which it takes its starting cadence."""

from __future__ import annotations

from pathlib import Path

from faceswap_cam.models import defaults
from faceswap_cam.models.plan.engines import (
    ENGINE_MODELS,
    as_run,
    engine_quantize,
    load_presets,
    preset_shape,
)
from faceswap_cam.models.plan.gpus import (
    ASSUMED_SCALING_EFFICIENCY,
    Gpu,
    gpu_for_name,
    load_efficiency,
    load_scaling,
    local_gpu_name,
)
from faceswap_cam.models.plan.host import load_host_cost
from faceswap_cam.models.plan.memory import weight_bytes
from faceswap_cam.models.plan.preprocessing import (
    load_preprocess_efficiency,
    preprocess_seconds,
    stages_for,
)
from faceswap_cam.models.plan.rows import PlanRow, row_for
from faceswap_cam.models.plan.timing import CAMERA_FPS, Timing, predict_timing
from faceswap_cam.models.plan.work import Shape


def preset_rows(gpu: Gpu, engine: str, *, frame_size: tuple[int, int] = (1280, 720),
                quantize: str = "none", camera_fps: float = CAMERA_FPS,
                efficiency_file: Path | None = None, person_mask: str | None = None,
                mode: str = defaults.MODE, preprocessor: str = defaults.PREPROCESSOR
                ) -> list[PlanRow]:
    """Each preset of ``engine`` at its own size for a camera of ``frame_size``, without torch
    (analytic FLOPs, the parameter counts above): what ``doctor`` shows. ``person_mask``: the
    user's own, which every preset keeps (None: each preset's)."""
    efficiency = load_efficiency(gpu, efficiency_file, engine)
    preprocess = load_preprocess_efficiency(gpu, efficiency_file)
    host = load_host_cost(engine, efficiency_file)
    model = ENGINE_MODELS.get(engine)
    if model is None:
        return []
    rows = []
    for preset in load_presets(engine):
        shape = preset_shape(preset, frame_size)
        q = engine_quantize(engine, preset, quantize, gpu)
        rows.append(row_for(preset, shape, model.analytic_work(shape), gpu=gpu,
                            efficiency=efficiency, quantize=q, gpus=1, camera_fps=camera_fps,
                            weights=weight_bytes(model.params, q), preset_size=True,
                            preprocess=preprocess, host=host, person_mask=person_mask,
                            mode=mode,
                            preprocessor=preprocessor))
    return rows


def predict_settings(engine: str, *, steps: int, segment_frames: int, carry: int,
                     size: tuple[int, int], preset: str | None = None,
                     quantize: str | None = None, gpu_name: str | None = None,
                     gpus: int = 1, camera_fps: float = CAMERA_FPS,
                     efficiency_file: Path | None = None, person_mask: str | None = None,
                     mode: str = defaults.MODE,
                     preprocessor: str = defaults.PREPROCESSOR) -> Timing | None:
    """The daemon's prediction for its own settings, without torch (analytic FLOPs); None when
    the engine has no model here or the GPU is unknown. Guidance is the preset's, else the
    engine default's. ``person_mask`` (the one the engine runs, the preset already applied;
    None: the preset's), ``mode`` and ``preprocessor`` say which preprocessing models run."""
    model = ENGINE_MODELS.get(engine)
    if model is None:
        return None
    guidance_scale = defaults.GUIDANCE_SCALE
    chosen = next((p for p in load_presets(engine) if p.name.value == preset), None) \
        if preset is not None else None
    if chosen is not None:
        guidance_scale = chosen.guidance_scale
        person_mask = person_mask or chosen.person_mask
    name = gpu_name if gpu_name is not None else local_gpu_name()
    gpu = gpu_for_name(name) if name else None
    if gpu is None:
        return None
    work = model.analytic_work(Shape(size[0], size[1], segment_frames - carry, segment_frames))
    stages = stages_for(engine, person_mask, mode, preprocessor)
    return predict_timing(work, steps=steps, guidance_scale=guidance_scale,
                          segment=segment_frames, carry=carry, gpu=gpu,
                          efficiency=load_efficiency(gpu, efficiency_file, engine),
                          quantize=as_run(quantize or "none", gpu),
                          gpus=gpus, camera_fps=camera_fps,
                          scaling_efficiency=load_scaling(gpu, gpus, efficiency_file).efficiency
                          if gpus > 1 else ASSUMED_SCALING_EFFICIENCY,  # unused on one GPU
                          preprocess_s=preprocess_seconds(
                              stages, segment_frames - carry, gpu,
                              load_preprocess_efficiency(gpu, efficiency_file)),
                          host_s=load_host_cost(engine, efficiency_file).seconds(
                              segment_frames - carry, mode))
