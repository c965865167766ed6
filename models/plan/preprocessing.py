"""Wan-Animate's preprocessing in the plan: the person detector, the whole-body pose model and,
with ``--person-mask sam2``, SAM2 run on the GPU for every new frame of a batch, in the
engine's batch thread before the generation, so their time is part of the batch's.

Each model sees a fixed input whatever the generation size (the detector 640x640, the pose
model a 256x192 crop of the person, SAM2 1024x1024), so its work is a constant a frame. The
constants were counted once with ``FlopCounterMode`` on the real-size configs of the models
``models download`` fetches, with PyTorch's reference attention (the counter has no formula
for the CPU's fused attention kernels and would leave attention out): ``benchmarks/
preprocess.py --count-flops`` counts them again, and a test recounts the detector and the
pose model. wan-animate-2 takes the camera frames as
they are and has no such stage.

Their efficiency is assumed until ``benchmarks/preprocess.py --gpu`` has measured it on a GPU
(it writes the measurement into the efficiency file the DiT's sits in):

- the detector and the pose model take a batch's frames in one forward, so they are assumed
  to reach :data:`ASSUMED_BATCHED_EFFICIENCY` of the TF32 peak their products run at
  (models/preprocessing/precision.py);
- SAM2 tracks frame by frame, each step a batch of one: the SAM 2.1 release lists Hiera-T at
  91.2 frames a second on an A100, compiled, which is 27 % of that GPU's BF16 peak at this
  count; uncompiled, as here, :data:`ASSUMED_TRACKER_EFFICIENCY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceswap_cam.models import defaults
from faceswap_cam.models.plan import gpus as plan_gpus
from faceswap_cam.models.plan.gpus import (
    Gpu,
    measured_on,
    read_measurements,
    write_measurements,
)
from faceswap_cam.models.wan.requirements import preprocessing_models


@dataclass(frozen=True)
class Stage:
    """One preprocessing model: its FLOPs a frame and the tensor-core mode it runs in."""

    name: str
    flops_per_frame: float
    precision: str  # "tf32" (float32 weights, precision.py) or "bf16"
    batched: bool  # one forward for the batch's frames; False: frame by frame


#: RT-DETRv2-r18vd (defaults.DETECTOR_REPO) at its processor's 640x640.
DETECTOR = Stage("detector", 61.51e9, "tf32", batched=True)
#: ViTPose-H whole-body (defaults.POSE_FILE) at 256x192.
POSE = Stage("pose", 251.84e9, "tf32", batched=True)
#: SAM2.1 Hiera-T (defaults.SAM2_REPO) at 1024x1024, a tracked frame with a full memory
#: (7 frames): image encoder, memory attention (most of it: 4,096 tokens attending to seven
#: frames' memories), mask decoder and memory encoder.
SAM2 = Stage("sam2", 913.0e9, "bf16", batched=False)
STAGES = {stage.name: stage for stage in (DETECTOR, POSE, SAM2)}

ASSUMED_BATCHED_EFFICIENCY = 0.4
ASSUMED_TRACKER_EFFICIENCY = 0.15
#: The engines that run this preprocessing before generating.
PREPROCESSING_ENGINES = frozenset({"wan-animate"})


def stages_for(engine: str, person_mask: str | None = None, mode: str = defaults.MODE,
               preprocessor: str = defaults.PREPROCESSOR) -> tuple[Stage, ...]:
    """The models ``engine`` runs on each new frame with these settings (the engine's own
    rule, :func:`~faceswap_cam.models.wan.requirements.preprocessing_models`); none for an
    engine without this preprocessing."""
    if engine not in PREPROCESSING_ENGINES:
        return ()
    return tuple(STAGES[name] for name in preprocessing_models(
        {"person_mask": person_mask, "mode": mode, "preprocessor": preprocessor}))


@dataclass(frozen=True)
class PreprocessEfficiency:
    batched: float  # the detector and the pose model, of the TF32 peak
    tracker: float  # SAM2, of the BF16 peak
    batched_assumed: bool
    tracker_assumed: bool
    source: str

    def assumed_for(self, stages: tuple[Stage, ...]) -> bool:
        """Whether any of ``stages`` is predicted at an assumed efficiency."""
        return any(self.batched_assumed if stage.batched else self.tracker_assumed
                   for stage in stages)


ASSUMED_PREPROCESS = PreprocessEfficiency(
    ASSUMED_BATCHED_EFFICIENCY, ASSUMED_TRACKER_EFFICIENCY, True, True,
    f"ASSUMED {ASSUMED_BATCHED_EFFICIENCY:.0%} of the TF32 peak (detector, pose), "
    f"{ASSUMED_TRACKER_EFFICIENCY:.0%} of the BF16 peak (SAM2): not measured yet")


def load_preprocess_efficiency(gpu: Gpu, path: Path | None = None) -> PreprocessEfficiency:
    """What ``benchmarks/preprocess.py --gpu`` measured on this GPU, else on another (said
    so), else assumed. A figure it could not measure (no SAM2 in the run) stays assumed."""
    path = plan_gpus.EFFICIENCY_FILE if path is None else path
    section = read_measurements(path).get("preprocessing")
    by_gpu = section.get("by_gpu") if isinstance(section, dict) else None
    if not isinstance(by_gpu, dict):
        return ASSUMED_PREPROCESS
    keys = [gpu.key] if gpu.key in by_gpu else []
    keys += sorted(key for key in by_gpu if key != gpu.key)
    for key in keys:
        entry = by_gpu[key]
        batched = entry.get("batched_efficiency") if isinstance(entry, dict) else None
        if not isinstance(batched, (int, float)) or batched <= 0:
            continue
        tracker = entry.get("tracker_efficiency")
        measured_tracker = isinstance(tracker, (int, float)) and tracker > 0
        device = measured_on(entry, key, gpu)
        return PreprocessEfficiency(
            float(batched), float(tracker) if measured_tracker else ASSUMED_TRACKER_EFFICIENCY,
            False, not measured_tracker,
            f"{batched:.0%} of the TF32 peak (detector, pose), " + (
                f"{tracker:.0%} of the BF16 peak (SAM2), measured on {device} ({path.name})"
                if measured_tracker else
                f"measured on {device} ({path.name}); SAM2 ASSUMED "
                f"{ASSUMED_TRACKER_EFFICIENCY:.0%} of the BF16 peak: not measured yet"))
    return ASSUMED_PREPROCESS


def save_preprocess_efficiency(path: Path, gpu: Gpu, entry: dict[str, Any]) -> None:
    """Merge one GPU's measured preprocessing efficiency into the efficiency file."""
    document = read_measurements(path)
    section = document.setdefault("preprocessing", {})
    section.setdefault("by_gpu", {})[gpu.key] = entry
    write_measurements(path, document)


def stage_peak(stage: Stage, gpu: Gpu) -> float:
    """FLOP/s at 100 % for the stage's precision on ``gpu``."""
    return (gpu.tf32_tflops if stage.precision == "tf32" else gpu.bf16_tflops) * 1e12


def preprocess_flops(stages: tuple[Stage, ...], frames: int) -> float:
    return frames * sum(stage.flops_per_frame for stage in stages)


def preprocess_seconds(stages: tuple[Stage, ...], frames: int, gpu: Gpu,
                       efficiency: PreprocessEfficiency) -> float:
    """Seconds the stages take on ``frames`` new frames on ``gpu``."""
    return sum(frames * stage.flops_per_frame
               / (stage_peak(stage, gpu)
                  * (efficiency.batched if stage.batched else efficiency.tracker))
               for stage in stages)
