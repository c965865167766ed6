"""Seconds per batch on a GPU and what they mean for the screen: the engine's rate, the
cadence, the swapped fps shown and the capture-to-screen latency."""

from __future__ import annotations

from dataclasses import dataclass

from faceswap_cam.models.batching import cadence_for
from faceswap_cam.models.plan.gpus import ASSUMED_SCALING_EFFICIENCY, Efficiency, Gpu
from faceswap_cam.models.plan.work import Work

CAMERA_FPS = 30.0


@dataclass(frozen=True)
class Timing:
    dit_s: float  # all of a batch's forwards
    vae_s: float
    batch_s: float  # preprocessing + DiT + VAE
    engine_fps: float  # new frames / batch time
    cadence: int
    fps: float  # swapped frames shown per second: camera fps / cadence (or the engine's rate)
    latency_s: float
    preprocess_s: float = 0.0  # the new frames' preprocessing models (plan/preprocessing.py)
    host_s: float = 0.0  # the CPU's work around the models (plan/host.py)
    #: The share of the time between batches at this cadence that a batch leaves unused.
    spare: float = 0.0


def predict_timing(work: Work, *, steps: int, guidance_scale: float, segment: int, carry: int,
                   gpu: Gpu, efficiency: Efficiency, quantize: str = "none", gpus: int = 1,
                   scaling_efficiency: float = ASSUMED_SCALING_EFFICIENCY,
                   camera_fps: float = CAMERA_FPS, preprocess_s: float = 0.0,
                   host_s: float = 0.0) -> Timing:
    """Seconds per batch on ``gpu`` and what they mean for the screen (the module doc).
    ``preprocess_s``: the batch's preprocessing models, which run before its generation;
    ``host_s``: the CPU's work in the same call."""
    total, linear = work.dit_per_batch(steps, guidance_scale > 1.0)
    bf16 = gpu.bf16_tflops * 1e12 * efficiency.dit
    linear_peak = bf16
    if quantize == "fp8" and gpu.fp8_tflops:
        linear_peak = gpu.fp8_tflops * 1e12 * efficiency.dit
    # Context parallelism splits the DiT only; the VAE runs on one GPU.
    dit_s = ((linear / linear_peak + (total - linear) / bf16)
             / (gpus * scaling_efficiency if gpus > 1 else 1))
    vae_s = work.vae_flops / (gpu.bf16_tflops * 1e12 * efficiency.vae)
    batch_s = host_s + preprocess_s + dit_s + vae_s
    new = segment - carry
    # The daemon's own choice, where it starts (and where it would step down to).
    cadence = cadence_for(batch_s / new, camera_fps)
    # The batch's oldest frame waits for its last, (new - 1) x k ticks later; its result then
    # reaches the screen at the next publish tick.
    latency = (new - 1) * cadence / camera_fps + batch_s + 1 / camera_fps
    # At the largest cadence an engine slower still skips batches: the engine's rate shows.
    shown = min(camera_fps / cadence, new / batch_s)
    spare = 1 - batch_s / (new * cadence / camera_fps)
    return Timing(dit_s, vae_s, batch_s, new / batch_s, cadence, shown, latency, preprocess_s,
                  host_s, spare)
