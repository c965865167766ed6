"""The plan as text (a table with its legend) and as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from faceswap_cam.models.plan.gpus import ASSUMED_SCALING_EFFICIENCY, Efficiency, Gpu, Scaling
from faceswap_cam.models.plan.host import HostCost
from faceswap_cam.models.plan.preprocessing import PreprocessEfficiency
from faceswap_cam.models.plan.rows import PlanRow


def format_rows(rows: Sequence[PlanRow]) -> list[str]:
    header = (f"  {'engine':<13} {'preset':<9} {'size':>9} {'window':<6} {'L':>3} {'steps':>5} "
              f"{'quant':>5} "
              f"{'TFLOP/fwd':>9} {'TFLOP/frame':>11} {'VAE%':>5} {'pre s':>5} {'cpu s':>5} "
              f"{'batch s':>7} "
              f"{'eng fps':>7} "
              f"{'k':>2} {'spare':>5} {'fps':>5} {'latency':>7} {'mem GB':>6}")
    lines = [header, "  " + "-" * (len(header) - 2)]
    for r in rows:
        mark = "*" if r.preset_size else " "
        lines.append(
            f"  {r.engine:<13} {r.preset:<9}{mark}{r.width:>4}x{r.height:<4} {r.gen_window:<6} "
            f"{r.segment_frames:>3} "
            f"{r.steps:>3}x{r.forwards_per_step} {r.quantize:>5} {r.tflop_per_forward:>9.1f} "
            f"{r.tflop_per_new_frame:>11.1f} {100 * r.vae_share:>5.1f} {r.preprocess_s:>5.3f} "
            f"{r.host_s:>5.3f} "
            f"{r.batch_s:>7.2f} "
            f"{r.engine_fps:>7.2f} {r.cadence:>2} {_spare(r.spare):>5} {r.fps:>5.2f} "
            f"{r.latency_s:>6.2f}s "
            f"{r.memory_gb:>5.1f}{'' if r.fits else '!'}")
    return lines


def _spare(spare: float) -> str:
    return f"{100 * spare:.0f}%" if spare >= 0 else "none"


def render_text(rows: Sequence[PlanRow], gpu: Gpu, efficiencies: Mapping[str, Efficiency], *,
                gpus: int, camera_fps: float, scaling: Scaling | None = None,
                preprocess: PreprocessEfficiency | None = None,
                hosts: Mapping[str, HostCost] | None = None) -> str:
    """The table, headed by the GPU and each engine's efficiency (measured or assumed), the
    preprocessing's where a row has any, and each engine's CPU work (``hosts``)."""
    fp8 = f"{gpu.fp8_tflops:g}" if gpu.fp8_tflops else "none"
    lines = [f"Capacity plan on {gpus} x {gpu.name} ({gpu.key}: dense bf16 {gpu.bf16_tflops:g} / "
             f"fp8 {fp8} TFLOP/s, {gpu.memory_gb:g} GB), camera {camera_fps:g} fps"]
    lines += [f"  efficiency ({engine}): {efficiency.source}"
              for engine, efficiency in efficiencies.items()]
    if preprocess is not None and any(row.preprocess_models for row in rows):
        lines.append(f"  efficiency (preprocessing): {preprocess.source}")
    lines += [f"  CPU work ({engine}): {host.source}"
              for engine, host in (hosts or {}).items() if host.preprocess_ms or host.replace_ms]
    if gpus > 1:
        source = scaling.source if scaling else f"ASSUMED {ASSUMED_SCALING_EFFICIENCY:.0%}"
        lines.append(f"  {gpus} GPUs: the DiT splits over them, the VAE runs on one; scaling "
                     f"efficiency {source}")
    lines.append("")
    lines += format_rows(rows)
    lines += [
        "",
        "  *: the preset's own size and L (a preset that carries 5 frames has no L = 9 row:",
        "  carrying 5 needs L >= 13); window: frame, the whole frame at this size;",
        "  person, the square window around the person that replace mode generates when the",
        "  person fits one with room to move (a centred head-and-shoulders shot; a wider",
        "  person takes a 4:3 window or the whole frame, so the daemon's starting cadence",
        "  comes from the frame row); steps: steps x forwards per step (2 with CFG);",
        "  TFLOP/fwd: one denoising forward; TFLOP/frame: the DiT's per new frame (steps x",
        "  forwards x forward / (L - P); wan-animate-2 adds its reference pass per segment,",
        "  and its unconditional forwards skip a block);",
        "  VAE%: the VAE's share of the batch time; pre s: the new frames' preprocessing models",
        "  on the GPU (wan-animate: detector and pose, and SAM2 where the preset's person mask",
        "  is sam2), which run before the generation and are part of batch s; cpu s: the",
        "  CPU's work in the batch (scaling, drawing, masks, compositing; wan-animate-2: the",
        "  frames' conversions and letterboxing), part of batch s too; eng fps: new",
        "  frames / batch s; k: the cadence (every k-th camera frame) the daemon chooses and",
        "  starts at (batches leave at least 9 % of it to spare); spare: the share of the",
        "  time between batches at k that a batch leaves unused (none: the engine falls",
        "  behind even at the largest k); fps: swapped frames shown per second (camera",
        "  fps / k); latency: capture to screen = (L - P - 1) x k / camera fps + batch s + a",
        "  frame (the oldest frame of a batch waits for its last, then the batch's generation);",
        "  both with --playout smooth: the live playout shows each batch's newest frame only",
        "  (fps / (L - P) swapped frames a second, about batch s after capture);",
        "  mem GB: weights + estimated activations + runtime, per GPU ('!': more than the GPU",
        "  has).",
    ]
    return "\n".join(lines)


def rows_json(rows: Sequence[PlanRow]) -> str:
    return json.dumps([{k: round(v, 4) if isinstance(v, float) else v
                        for k, v in asdict(row).items()} for row in rows])
