"""``benchmarks/gpu_engine.py --preset``: an engine's presets, each at its own generation size,
segment length, carry, steps and guidance, measured on the product's per-batch path beside the
capacity plan's prediction (``faceswap_cam.models.plan``); and the pieces of that script's
timing both preset modes share (the CUDA-event clock, building in bf16, the GPU's peak).

wan-animate's presets are measured in gpu_engine.py (its ``measure_shape`` runs
``StreamingWanAnimate.generate_uint8``); this module measures wan-animate-2's and prints and writes
both engines' rows.

wan-animate-2 (``--engine wan-animate-2``): ``WanAnimate2Transformer3DModel`` with the class
defaults (the released 14B's config, as the plan's meta model uses: 40 layers, dim 5120, ffn
13824) and the default ``AutoencoderKLWan``, random weights built in bf16 on the GPU, shared by
the two checkpoints' modular pipelines (one architecture): the base one (``WanAnimate2Blocks``,
its guider's CFG 3.0, DPM-Solver) for ``quality`` and the distilled one (no CFG, flow-matching
Euler) for ``balanced`` and ``live``, as ``models/wan2/variants.PRESET_VARIANTS`` says. Each
preset runs ``StreamingWanAnimate2.generate_uint8`` (the engine's own segment code: the letterboxing
of 1280x720 camera frames, the per-segment VAE encodes, the reference pass, the denoising loop,
the decode) at the preset's own size for a 1280x720 camera. The text encoder, tokenizer and
CLIP tower are stand-ins giving random features of their real widths: what they compute is per
stream or per reference, outside the per-batch path. On a GPU the transformer blocks are
compiled by default (``--no-compile`` to not): uncompiled, the generation self-attention's
flex kernel materialises every score and does not fit at these sizes (diffusers' doc of
``WanAnimate2AttnProcessor``).

Per preset it prints seconds per denoising step, %-of-peak (every transformer FLOP of a batch,
the reference pass's and the steps', over the transformer's time, against the dense bf16
peak), the VAE's share of the batch, swapped fps (new frames / batch latency), the batch
latency and the peak GPU memory, each beside the plan's prediction (its analytic count: the
figures ``doctor`` shows; ``faceswap-cam plan`` counts the same on the meta model). The
measured efficiency goes to the efficiency file under ``engines["wan-animate-2"]["by_gpu"]``,
entries in the same form as the top-level ``by_gpu`` (wan-animate's); ``faceswap-cam plan``,
``doctor`` and the daemon's starting cadence read each engine's own, else the other's on the
same GPU (``load_efficiency``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import PIL.Image
import torch

from benchmarks._timing import hook_module, undone_on_exit, wrap_method
from benchmarks.call_time import (
    ASSUMED_COMPILE_S,
    STOPPED_CODE,
    Budget,
    PlannedRun,
    planned_runs,
    planned_text,
    stopped_by_signals,
)
from faceswap_cam.models.plan.animate2 import (
    ANIMATE_2_14B_PARAMS,
    ANIMATE_2_14B_TRANSFORMER,
    analytic_animate_2_work,
)
from faceswap_cam.models.plan.engines import load_presets, preset_shape
from faceswap_cam.models.plan.gpus import (
    EFFICIENCY_FILE,
    FIRST_ENGINE,
    Efficiency,
    Gpu,
    gpu_for_name,
    load_efficiency,
    measured_entry,
    save_efficiency,
)
from faceswap_cam.models.plan.host import host_entry, load_host_cost, save_host_cost
from faceswap_cam.models.plan.memory import weight_bytes
from faceswap_cam.models.plan.preprocessing import ASSUMED_PREPROCESS
from faceswap_cam.models.plan.rows import row_for
from faceswap_cam.models.plan.timing import CAMERA_FPS, predict_timing
from faceswap_cam.models.plan.work import Shape, Work
from faceswap_cam.models.presets import Preset

WAN2_ENGINE = "wan-animate-2"
#: The camera the presets' generation sizes are for (``preset_shape``'s default).
CAMERA = (1280, 720)
#: Denoising steps of a ``--tiny`` wan-animate-2 batch at most (40 guided steps of the tiny
#: model's eager flex attention take a CPU most of a minute a batch).
TINY_STEPS = 2

# --- timing --------------------------------------------------------------------------------

_cuda_event: Any = torch.cuda.Event  # untyped constructor


class Clock:
    """Durations of labelled spans: CUDA events on a GPU, ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._pending: list[tuple[str, Any, Any]] = []
        self._done: dict[str, list[float]] = defaultdict(list)

    def start(self) -> Any:
        if self.cuda:
            event = _cuda_event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, label: str, token: Any) -> None:
        if self.cuda:
            event = _cuda_event(enable_timing=True)
            event.record()
            self._pending.append((label, token, event))
        else:
            self._done[label].append(time.perf_counter() - token)

    def take(self) -> dict[str, list[float]]:
        """Every span since the last take, in seconds (waits for the GPU)."""
        if self.cuda:
            torch.cuda.synchronize()
            for label, begin, end in self._pending:
                self._done[label].append(begin.elapsed_time(end) / 1000)
            self._pending.clear()
        taken = dict(self._done)
        self._done = defaultdict(list)
        return taken


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``call`` takes, the GPU's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def detect_peak(device: torch.device, override: float | None) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", override
    name = torch.cuda.get_device_name(device)
    if override is not None:
        return name, override
    gpu = gpu_for_name(name)
    return name, gpu.bf16_tflops if gpu else None


def prediction_gpu(device: torch.device, gpu_name: str, peak: float | None
                   ) -> tuple[Gpu | None, Gpu]:
    """(the plan's table entry for this GPU or None, the GPU the predictions are made for:
    that entry, else one of the measured peak, or 1 TFLOP/s on the CPU)."""
    table_gpu = gpu_for_name(gpu_name) if device.type == "cuda" else None
    return table_gpu, table_gpu or Gpu("cpu", gpu_name, peak or 1.0, None, 0, ())


# --- building ------------------------------------------------------------------------------

def diffusers_module() -> Any:
    return importlib.import_module("diffusers")


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def keep_fp32_parts(model: Any) -> None:
    """Parameters ``from_pretrained`` would keep in fp32 (norms, modulation, time embedder)."""
    names = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        if names.intersection(name.split(".")):
            param.data = param.data.float()


# --- rows, table, JSON, efficiency file -----------------------------------------------------

@dataclass
class PresetRow:
    preset: str
    engine: str
    variant: str | None  # wan-animate-2's checkpoint (base | distilled)
    guidance_scale: float
    size: str
    segment: int
    carry: int
    steps: int
    step_s: float
    peak_share: float | None
    dit_s: float  # all of a batch's transformer forwards
    vae_s: float  # a batch's VAE encodes and decode
    vae_share: float
    fps: float
    batch_s: float
    peak_mem_gib: float | None
    dit_efficiency: float | None
    vae_efficiency: float | None
    predicted_step_s: float
    predicted_vae_share: float
    predicted_fps: float
    predicted_batch_s: float
    predicted_memory_gb: float
    assumed_efficiency: bool
    #: The transformer's quantization this row ran with (the peak share is of its peak).
    quantize: str = "none"
    #: The engine's CPU work a new frame, measured (ms; wan-animate-2's rows) and planned.
    host_ms: float | None = None
    predicted_host_ms: float | None = None


def print_preset_table(title: str, rows: Sequence[PresetRow]) -> None:
    variants = any(r.variant for r in rows)
    var_head = f" {'ckpt':<9}" if variants else ""
    header = (f"  {'preset':<9}{var_head} {'size':>9} {'quant':>5} {'L':>3} {'steps':>5} "
              f"{'s/step':>7} "
              f"{'pred.':>7} {'%peak':>6} {'VAE%':>5} {'pred.':>5} {'fps':>6} {'pred.':>6} "
              f"{'batch s':>7} {'pred.':>7} {'mem GiB':>7} {'pred. GB':>8}")
    print()
    print(title)
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in rows:
        var_cell = f" {r.variant or '-':<9}" if variants else ""
        print(f"  {r.preset:<9}{var_cell} {r.size:>9} {r.quantize:>5} {r.segment:>3} {r.steps:>5} "
              f"{r.step_s:>7.3f} {r.predicted_step_s:>7.3f} "
              f"{fmt(None if r.peak_share is None else 100 * r.peak_share, '.1f'):>6} "
              f"{100 * r.vae_share:>5.1f} {100 * r.predicted_vae_share:>5.1f} {r.fps:>6.2f} "
              f"{r.predicted_fps:>6.2f} {r.batch_s:>7.3f} {r.predicted_batch_s:>7.3f} "
              f"{fmt(r.peak_mem_gib, '.1f'):>7} {r.predicted_memory_gb:>8.1f}")
    print("  s/step: denoising step; %peak: DiT TFLOP/s over the dense bf16 peak (the fp8 peak")
    print("  for an fp8 row); VAE%: its share of the batch; fps: new frames / batch s (batch s:")
    print("  the batch latency).")


def write_efficiency(path: Path, gpu: Gpu, device_name: str, rows: Sequence[PresetRow],
                     engine: str = FIRST_ENGINE, *, complete: bool = True) -> Path:
    """Merge this GPU's measured DiT and VAE efficiency (medians over the presets) into the
    file ``faceswap-cam plan`` reads: wan-animate's in the top-level ``by_gpu`` (what the plan
    reads), another engine's in ``engines[engine]["by_gpu"]`` in the same form. What else the
    file holds is kept."""
    # The plan scales one DiT efficiency by each kind's peak (attention at bf16's): it comes
    # from the unquantized rows only; a run of quantized rows alone keeps what the file held
    # (fp8's share of its own peak is in its rows below).
    dit = [r.dit_efficiency for r in rows if r.quantize == "none" and r.dit_efficiency]
    vae = [r.vae_efficiency for r in rows if r.vae_efficiency]
    held = measured_entry(path, gpu, engine).get("dit_efficiency")
    entry = {
        "device": device_name,
        "dit_efficiency": round(statistics.median(dit), 4) if dit else held,
        "vae_efficiency": round(statistics.median(vae), 4) if vae else None,
        "measured": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
        # False while a run is under way (it writes after each preset): one stopped part-way
        # left the medians of the presets it got to.
        "complete": complete,
        "presets": {r.preset: {"size": r.size, "segment": r.segment, "steps": r.steps,
                               "variant": r.variant, "step_s": r.step_s, "fps": r.fps,
                               "quantize": r.quantize, "dit_efficiency": r.dit_efficiency}
                    for r in rows}}
    save_efficiency(path, gpu, engine, entry)
    return path


def run_cost(preset: Preset, shape: Shape) -> float:
    """A batch's relative cost (steps x forwards a step x video tokens), to run the cheapest
    first: a run the device call's time limit stops part-way has then measured the most."""
    forwards = 2 if preset.guidance_scale > 1 else 1
    return preset.steps * forwards * shape.width * shape.height * shape.segment


def save_measured(args: argparse.Namespace, table_gpu: Gpu | None, gpu_name: str,
                  rows: Sequence[PresetRow], engine: str, *,
                  complete: bool = False) -> Path | None:
    """The rows' efficiency into the file, for a GPU of the plan's table (not ``--tiny``): the
    file's path, or None. Called after each preset as well as at the end, so that a run the
    device call's time limit stops part-way keeps what it measured."""
    if args.tiny or table_gpu is None or not rows:
        return None
    return write_efficiency(args.efficiency_file or EFFICIENCY_FILE, table_gpu, gpu_name, rows,
                            engine, complete=complete)


def finish(args: argparse.Namespace, *, engine: str, title: str, gpu_name: str,
           table_gpu: Gpu | None, peak: float | None, build_s: float, efficiency: Efficiency,
           rows: list[PresetRow], notes: Sequence[str] = (),
           extra: dict[str, Any] | None = None, complete: bool = True) -> int:
    """The table, the efficiency file (a GPU of the plan's table, not ``--tiny``) and the JSON
    line every preset run ends with. ``complete``: every preset measured (False: a run
    stopped, or a preset failed; the file says so)."""
    print_preset_table(f"{title}, {'TINY (figures mean nothing)' if args.tiny else gpu_name}"
                       f", built in {build_s:.1f} s; prediction (pred.) at {efficiency.source}",
                       rows)
    for note in notes:
        print(f"  {note}")
    written = save_measured(args, table_gpu, gpu_name, rows, engine, complete=complete)
    if written is not None:
        print(f"  measured efficiency written to {written}")
    print(json.dumps({
        "benchmark": "gpu_engine_presets", "engine": engine, "device": gpu_name,
        "tiny": args.tiny, "torch": torch.__version__, "peak_tflops": peak,
        "build_s": round(build_s, 2), "efficiency_source": efficiency.source,
        "efficiency_file": str(written) if written else None, "complete": complete,
        **(extra or {}), "rows": [asdict(r) for r in rows]}))
    return 0


# --- wan-animate-2 -------------------------------------------------------------------------

class StandInTokenizer:
    """Stands for the UMT5 tokenizer: every prompt one token, padded to ``max_length``."""

    def __call__(self, prompt: str | list[str], *, max_length: int, **_: Any) -> Any:
        count = len(prompt) if isinstance(prompt, list) else 1
        mask = torch.zeros(count, max_length, dtype=torch.long)
        mask[:, 0] = 1
        return SimpleNamespace(input_ids=mask.clone(), attention_mask=mask)


class StandInTextEncoder:
    """Stands for UMT5-XXL (per stream: outside the per-batch path): random hidden states of
    its width. Not a module, so the pipeline's execution device stays the models' own."""

    def __init__(self, width: int, dtype: torch.dtype) -> None:
        self.width, self.dtype = width, dtype
        self._generator = torch.Generator().manual_seed(0)

    def to(self, *_: Any, **__: Any) -> StandInTextEncoder:
        return self

    def __call__(self, input_ids: torch.Tensor, attention_mask: Any = None) -> Any:
        hidden = torch.randn(*input_ids.shape, self.width, generator=self._generator)
        return SimpleNamespace(last_hidden_state=hidden.to(input_ids.device, self.dtype))


class StandInImageEncoder:
    """Stands for the CLIP ViT-H/14 tower (per reference and per chain: outside the per-batch
    path): random features, ``tokens`` x 1280, for each image."""

    def __init__(self, tokens: int, dtype: torch.dtype) -> None:
        self.tokens, self.dtype = tokens, dtype
        self._generator = torch.Generator().manual_seed(1)

    def to(self, *_: Any, **__: Any) -> StandInImageEncoder:
        return self

    def __call__(self, pixel_values: torch.Tensor, output_hidden_states: bool = True) -> Any:
        hidden = torch.randn(pixel_values.shape[0], self.tokens, 1280, generator=self._generator)
        hidden = hidden.to(pixel_values.device, self.dtype)
        return SimpleNamespace(hidden_states=(hidden, hidden))  # the pipeline reads [-2]


def variant_scheduler(variant: str) -> Any:
    """The released checkpoints' schedulers (base: DPM-Solver, distilled: flow-matching Euler;
    as ``tests/wan2_tiny`` builds them). Their cost is negligible."""
    diffusers = diffusers_module()
    if variant == "base":
        return diffusers.DPMSolverMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    return diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0)


def build_wan2(device: torch.device, *, tiny: bool, image_tokens: int) -> dict[str, Any]:
    """A modular pipeline per checkpoint (by variant value) sharing one transformer and VAE:
    tests/wan2_tiny's tiny models, or the real-size ones with random weights in bf16."""
    from faceswap_cam.models.wan2.variants import Wan2Variant

    diffusers = diffusers_module()
    torch.manual_seed(0)
    if tiny:
        wan2_tiny: Any = importlib.import_module("tests.wan2_tiny")
        parts = wan2_tiny.build_tiny_components("distilled")
        transformer, vae = parts["transformer"].to(device), parts["vae"].to(device)
    else:
        # Built where it runs, in bf16: seconds, not the minutes of 16B fp32 parameters on CPU.
        with torch.device(device), default_dtype(torch.bfloat16):
            transformer = diffusers.WanAnimate2Transformer3DModel(**ANIMATE_2_14B_TRANSFORMER)
            vae = diffusers.AutoencoderKLWan()
        keep_fp32_parts(transformer)
    transformer = transformer.eval().requires_grad_(False)
    vae = vae.eval().requires_grad_(False)
    text_dim = int(transformer.config.text_dim)
    pipes = {}
    for variant in Wan2Variant:
        blocks = (diffusers.WanAnimate2Blocks() if variant is Wan2Variant.BASE
                  else diffusers.WanAnimate2DistilledBlocks())
        pipe = blocks.init_pipeline()
        pipe.update_components(
            transformer=transformer, vae=vae, scheduler=variant_scheduler(variant.value),
            text_encoder=StandInTextEncoder(text_dim, transformer.dtype),
            tokenizer=StandInTokenizer(),
            image_encoder=StandInImageEncoder(image_tokens, transformer.dtype))
        pipes[variant.value] = pipe
    return pipes


def wan2_work(transformer: Any, shape: Shape, *, tiny: bool, image_tokens: int) -> Work:
    """A batch's FLOPs as the plan counts them (the real model's analytic count; with
    ``tiny``, the same formula on the tiny config, the VAE uncounted)."""
    if not tiny:
        return analytic_animate_2_work(shape)
    work = analytic_animate_2_work(shape, dict(transformer.config), image_tokens)
    return dataclasses.replace(work, vae_flops=0, source="analytic (tiny config)")


def driving_frames(count: int, size: tuple[int, int], seed: int) -> list[PIL.Image.Image]:
    """Camera frames (``size`` = (W, H)): one random scene, shifted frame by frame."""
    width, height = size
    scene = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return [PIL.Image.fromarray(np.roll(scene, 3 * i, axis=1)) for i in range(count)]


def camera_arrays(count: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """:func:`driving_frames` as the engine gets them: BGR arrays."""
    return [cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
            for image in driving_frames(count, size, seed)]


def wan2_host_ms(video_processor: Any, camera: tuple[int, int], gen_size: tuple[int, int],
                 frames: int, repeats: int = 5) -> float:
    """wan-animate-2's CPU work a new frame in ms (models/plan/host.py), median of
    ``repeats`` batches of ``frames``: the engine's conversions of the camera frames to RGB
    images and of the generated ones back to BGR camera frames, and the pipeline's
    letterboxing of the driving frames (PIL), the stream's own call. Model-free, so it is
    measured at the real sizes even with ``--tiny``."""
    from faceswap_cam.models.wan2.engine import camera_frames, driving_images

    width, height = gen_size
    batch = camera_arrays(frames, camera, seed=3)
    generated = [np.ascontiguousarray(cv2.resize(f, gen_size)[..., ::-1]) for f in batch]
    times = []
    for _ in range(repeats + 1):  # the first warms the allocator and PIL's resamplers
        start = time.perf_counter()
        video_processor.preprocess_video(driving_images(batch), height=height, width=width,
                                         resize_mode="fill")
        camera_frames(generated, camera)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:]) / frames


@dataclass
class Wan2Measured:
    step_s: float
    dit_s: float
    vae_s: float
    batch_s: float
    peak_mem_gib: float | None
    cfg: bool


def measure_wan2(pipe: Any, preset: Preset, shape: Shape, *, camera: tuple[int, int],
                 iters: int, device: torch.device) -> Wan2Measured:
    """The engine's call (camera frames in and out, ``StreamingWanAnimate2.generate_uint8``
    between) at the preset's size, segment, carry and steps: after a warm-up (the first
    segment, on a GPU also one that carries frames), ``iters`` batches of L - P new camera
    frames, with every transformer forward, the denoising loop and the VAE's encodes and
    decode timed."""
    from faceswap_cam.models.wan2.streaming import StreamingWanAnimate2

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    transformer = pipe.transformer
    stream = StreamingWanAnimate2(
        pipe, height=shape.height, width=shape.width, segment_frames=shape.segment,
        carry=preset.carry, steps=preset.steps, seed=0,
        max_sequence_length=int(transformer.config.text_len))
    from faceswap_cam.models.wan2.engine import camera_frames, driving_images

    # The reference at the generation size: its aspect sets the frames' (no letterbox bars).
    stream.set_reference(driving_frames(1, (shape.width, shape.height), seed=7)[0])
    first = camera_arrays(shape.segment, camera, seed=1)
    following = camera_arrays(shape.new_frames, camera, seed=2)

    def engine_batch(frames: list[np.ndarray]) -> None:
        """The engine's call (WanAnimate2Engine.process) without its bookkeeping."""
        camera_frames(stream.generate_uint8(driving_images(frames)), camera)

    # Warm-up at one step: every step runs the same shapes (compiled kernels included), and
    # quality's 40 guided steps would cost the warm-up minutes of a device call's time.
    stream.steps = 1
    engine_batch(first)
    if device.type == "cuda":
        # And one carrying frames: compiled kernels, allocator and autotuning all warm. (On the
        # CPU the timed batches are the first to carry: --tiny checks the code, quickly.)
        engine_batch(following)
    stream.steps = preset.steps
    clock = Clock(device)
    with undone_on_exit([
        hook_module(transformer, "dit", clock),
        wrap_method(stream, "_denoise", "denoise", clock),
        wrap_method(pipe.vae, "encode", "vae_encode", clock),
        wrap_method(pipe.vae, "decode", "vae_decode", clock),
    ]):
        clock.take()
        batches = [timed(lambda: engine_batch(following), device) for _ in range(iters)]
        spans = clock.take()

    def per_batch(*labels: str) -> float:
        return sum(sum(spans.get(label, [])) for label in labels) / iters

    guider = pipe.guider
    return Wan2Measured(
        step_s=per_batch("denoise") / preset.steps, dit_s=per_batch("dit"),
        vae_s=per_batch("vae_encode", "vae_decode"), batch_s=median(batches),
        peak_mem_gib=(torch.cuda.max_memory_allocated(device) / 2**30
                      if device.type == "cuda" else None),
        cfg=bool(guider._enabled and guider.num_conditions > 1))


def measured_host_ms(rows: Sequence[PresetRow]) -> float | None:
    """The rows' host work a new frame (median), or None where none was measured."""
    measured = [r.host_ms for r in rows if r.host_ms is not None]
    return statistics.median(measured) if measured else None


def host_line(rows: Sequence[PresetRow], planned: str) -> str:
    measured = measured_host_ms(rows)
    if measured is None:
        return "host work (CPU): not measured"
    return (f"host work (CPU), {CAMERA[0]}x{CAMERA[1]} camera: {measured:.2f}"
            f" ms a new frame (conversions and letterboxing; in batch s); planned: {planned}")


def save_wan2_host(args: argparse.Namespace, table_gpu: Gpu | None, gpu_name: str,
                   rows: Sequence[PresetRow]) -> None:
    """The rows' host work into the efficiency file's ``host`` section, on the terms of
    :func:`save_measured`."""
    measured = measured_host_ms(rows)
    if args.tiny or table_gpu is None or measured is None:
        return
    save_host_cost(args.efficiency_file or EFFICIENCY_FILE, WAN2_ENGINE, host_entry(
        measured, 0.0, device=gpu_name, camera=CAMERA,
        by="benchmarks/gpu_engine.py --engine wan-animate-2 --preset"))


def use_attention_backend(transformer: Any, args: argparse.Namespace,
                          device: torch.device) -> None:
    """``--attention-backend`` as the daemon takes it: ``auto`` is chosen for the device
    (diffusers knows no ``auto``), and the choice is what the output reports."""
    if args.attention_backend:
        from faceswap_cam.models.attention import attention_backend

        args.attention_backend = attention_backend(args.attention_backend, str(device))
        transformer.set_attention_backend(args.attention_backend)


def asked_presets(engine: str, asked: str) -> list[Preset]:
    """``--preset``'s presets of ``engine``: one, or every one (``all``)."""
    return [p for p in load_presets(engine) if asked in ("all", p.name.value)]


def wan2_runs(presets: Sequence[Preset], args: argparse.Namespace
              ) -> list[tuple[Preset, Preset, Shape]]:
    """(the preset, the preset as run, its shape) for each, cheapest first: at its own size
    for the camera, or with ``--tiny`` at ``--sizes``' first and at most ``TINY_STEPS`` steps
    (a tiny run checks the code: every step runs the same code, so a few will do)."""
    jobs = []
    for own in sorted(presets, key=lambda p: run_cost(p, preset_shape(p, CAMERA))):
        if args.tiny:
            width, height = args.sizes[0]
            shape = Shape(width, height, own.segment_frames - own.carry, own.segment_frames)
            jobs.append((own, dataclasses.replace(own, steps=min(own.steps, TINY_STEPS)), shape))
        else:
            jobs.append((own, own, preset_shape(own, CAMERA)))
    return jobs


def wan2_planned(jobs: Sequence[tuple[Preset, Preset, Shape]], args: argparse.Namespace, *,
                 work: Callable[[Shape], Work], gpu: Gpu, efficiency: Efficiency,
                 rebuild_s: float) -> list[PlannedRun]:
    """Each run's predicted seconds (benchmarks/call_time.py): unquantized, compiling for
    each new shape where the blocks are compiled."""
    return planned_runs([(preset, shape, preset.name.value) for _, preset, shape in jobs],
                        {preset.name.value: "none" for _, preset, _ in jobs}, work=work,
                        gpu=gpu, efficiency=efficiency, iters=args.iters, rebuild_s=rebuild_s,
                        compile_s=ASSUMED_COMPILE_S if args.compile else 0.0)


def wan2_preset_main(args: argparse.Namespace, device: torch.device, budget: Budget) -> int:
    """Every asked preset of wan-animate-2 at its own size, measured beside the plan's
    prediction, inside ``budget`` (benchmarks/call_time.py); writes the measured efficiency
    under the engine's own section."""
    from faceswap_cam.models.wan2.variants import PRESET_VARIANTS, VARIANT

    presets = asked_presets(WAN2_ENGINE, args.preset)
    gpu_name, peak = detect_peak(device, args.peak_tflops)
    table_gpu, gpu = prediction_gpu(device, gpu_name, peak)
    efficiency = load_efficiency(gpu, args.efficiency_file, WAN2_ENGINE)
    host = load_host_cost(WAN2_ENGINE, args.efficiency_file)
    start = time.perf_counter()
    pipes = build_wan2(device, tiny=args.tiny, image_tokens=args.image_tokens)
    synchronize(device)
    build_s = time.perf_counter() - start
    transformer = pipes[VARIANT.value].transformer
    # The generation self-attention stays on flex whatever this says (the model's rule).
    use_attention_backend(transformer, args, device)
    if args.compile:
        transformer.compile_repeated_blocks(fullgraph=True)
    weights = weight_bytes(ANIMATE_2_14B_PARAMS, "none")
    rows: list[PresetRow] = []
    skipped: dict[str, str] = {}
    jobs = wan2_runs(presets, args)

    def work_at(shape: Shape) -> Work:
        return wan2_work(transformer, shape, tiny=args.tiny, image_tokens=args.image_tokens)

    planned = wan2_planned(jobs, args, work=work_at, gpu=gpu, efficiency=efficiency,
                           rebuild_s=build_s)
    for line in planned_text(planned, budget, efficiency.source):
        print(line, flush=True)
    with stopped_by_signals(budget) as stop:
        for index in budget.runnable(planned, stop, skip=skipped.__setitem__):
            (own, preset, shape), run = jobs[index], planned[index]
            began = time.monotonic()
            variant = PRESET_VARIANTS.get(preset.name.value, VARIANT).value
            pipe = pipes[variant]
            real = preset_shape(own, CAMERA)  # what the host work is measured at, even tiny
            real_size = (real.width, real.height)
            camera = (shape.width, shape.height) if args.tiny else CAMERA
            work = work_at(shape)
            # wan-animate-2 has no preprocessing models: their efficiency plays no part.
            plan = row_for(preset, shape, work, gpu=gpu, efficiency=efficiency, quantize="none",
                           gpus=1, camera_fps=CAMERA_FPS, weights=weights, preset_size=True,
                           preprocess=ASSUMED_PREPROCESS, host=host)
            # The steps alone: the reference pass runs once a batch, outside them.
            steps_only = predict_timing(
                dataclasses.replace(work, batch_flops=0, batch_linear_flops=0),
                steps=preset.steps, guidance_scale=preset.guidance_scale, segment=shape.segment,
                carry=preset.carry, gpu=gpu, efficiency=efficiency)
            try:
                with warnings.catch_warnings():
                    # Tiny runs are uncompiled on purpose; a GPU run says so if it is not.
                    if args.tiny:
                        warnings.filterwarnings("ignore", "flex_attention called without")
                    m = measure_wan2(pipe, preset, shape, camera=camera, iters=args.iters,
                                     device=device)
            except torch.OutOfMemoryError:
                skipped[preset.name.value] = f"out of GPU memory at {shape.label}"
                torch.cuda.empty_cache()
                continue
            # Only a run that measured says how the predictions compare with this machine.
            budget.record(run.seconds, time.monotonic() - began)
            dit_flops = work.dit_per_batch(preset.steps, m.cfg)[0]
            dit_tflops = dit_flops / m.dit_s / 1e12 if m.dit_s else 0.0
            vae_tflops = work.vae_flops / m.vae_s / 1e12 if m.vae_s and work.vae_flops else None
            rows.append(PresetRow(
                preset=preset.name.value, engine=WAN2_ENGINE, variant=variant,
                guidance_scale=float(pipe.guider.guidance_scale),
                size=f"{shape.width}x{shape.height}", segment=shape.segment, carry=preset.carry,
                steps=preset.steps, step_s=m.step_s,
                peak_share=dit_tflops / peak if peak else None, dit_s=m.dit_s, vae_s=m.vae_s,
                vae_share=m.vae_s / m.batch_s, fps=shape.new_frames / m.batch_s,
                batch_s=m.batch_s, peak_mem_gib=m.peak_mem_gib,
                dit_efficiency=dit_tflops / peak if peak else None,
                vae_efficiency=vae_tflops / peak if vae_tflops and peak else None,
                predicted_step_s=steps_only.dit_s / preset.steps,
                predicted_vae_share=plan.vae_share, predicted_fps=plan.engine_fps,
                predicted_batch_s=plan.batch_s, predicted_memory_gb=plan.memory_gb,
                assumed_efficiency=efficiency.assumed,
                predicted_host_ms=1000 * plan.host_s / shape.new_frames))
            print(f"  measured preset {preset.name.value} ({variant}): {m.batch_s:.3f} s/batch",
                  flush=True)
            save_measured(args, table_gpu, gpu_name, rows, WAN2_ENGINE)
            # After the row is safe: a time limit here costs seconds, not the preset. At
            # the real camera and generation sizes even when tiny: it needs no model.
            rows[-1].host_ms = wan2_host_ms(pipe.video_processor, CAMERA, real_size,
                                            shape.new_frames)
            save_wan2_host(args, table_gpu, gpu_name, rows)
    if stop.stopped:
        skipped["(the rest)"] = (f"STOPPED by {stop.why} after {len(rows)} of {len(presets)} "
                                 "presets")
    code = finish(args, engine=WAN2_ENGINE, title="Wan-Animate-2 presets", gpu_name=gpu_name,
                  table_gpu=table_gpu, peak=peak, build_s=build_s, efficiency=efficiency,
                  rows=rows, notes=(
                      host_line(rows, host.source),
                      "ckpt: the checkpoint's pipeline (base: CFG, two forwards a step); pred. "
                      "GB counts the CLIP",
                      "tower this run stands in for; %peak counts the reference pass too.",
                      *([f"TINY: at most {TINY_STEPS} steps a batch (each preset's own "
                          "count on a GPU)."] if args.tiny else []),
                      "every row unquantized: the live preset's fp8 is not measured here "
                      "(its blocks are compiled first).",
                      *(f"skipped {name}: {why}" for name, why in skipped.items())),
                  extra={"compile": bool(args.compile), "attention_backend": args.attention_backend,
                         "flops_source": "analytic", "skipped": skipped},
                  complete=not stop.stopped and not skipped)
    return STOPPED_CODE if stop.stopped else code
