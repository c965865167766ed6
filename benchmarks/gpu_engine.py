"""Wan2.2-Animate-14B streaming engine on a GPU: step time, DiT TFLOP/s, VAE time, swapped fps.

Runs the product's per-batch path, ``StreamingWanAnimate.generate_uint8`` on the uint8 arrays
the engine hands it (pose and conditioning VAE encodes, the denoising loop, the VAE decode,
the conversions of the frames in and out), at each generation
size, batch size (new frames per batch, L = new + P) and step count, and prints:

* seconds per denoising step (DiT forward + scheduler step; CUDA events, after a warm-up),
* DiT TFLOP/s and its share of the GPU's dense bf16 peak (H100/H200 989, A100 312 TFLOP/s, or
  ``--peak-tflops``). FLOPs of one transformer forward are counted with
  ``torch.utils.flop_counter.FlopCounterMode``; when the counter cannot see the attention
  kernels (a non-native ``--attention-backend``) the analytic count of the DiT's matmuls and
  attention is used instead. The output says which,
* VAE encode + decode time per batch, the rest of the batch (frame pre/post-processing,
  latent preparation), the batch latency (measured end to end; it equals steps x step time +
  VAE + the rest), swapped fps (new frames / batch latency), peak GPU memory per configuration.

The model: ``--model PATH`` loads a local diffusers checkpoint with the product's
``load_pipeline``. Without it the real-size architecture is built with random weights in bf16
directly on the GPU: ``WanAnimateTransformer3DModel`` with the Wan2.2-Animate-14B config (the
class defaults, 40 layers, 40 heads x 128, ffn 13824, text_dim 4096, image_dim 1280, plus the
checkpoint's ``added_kv_proj_dim=5120`` image cross-attention, which the class default leaves
out) and the default ``AutoencoderKLWan`` (the Wan 2.1 VAE that Animate uses). There is no text
encoder or CLIP then: random prompt embeds (1, 512, 4096) and image embeds (1, 257, 1280) stand
in for them; they are per-reference work, outside the per-batch path anyway.

That DiT has 17.27 B parameters (34.5 GB in bf16: it fits an 80 GB GPU with the VAE and
activations). One forward is about 194 / 313 / 539 / 934 TFLOP at 832x480 L=9 / 832x480 L=17
/ 1280x720 L=9 / 1280x720 L=17 (analytic); the defaults (not ``--preset``, so no budget)
should take about 5 minutes on an H100 (an estimate at half the bf16 peak: this script has not
yet run on a GPU).

Targets (ARCHITECTURE.md, performance budget): on a GPU the DiT should run near the hardware's FLOP
limit (the %peak column) and take most of the batch time (the DiT% column: VAE and
pre/post-processing are overhead to shrink); swapped fps sets the engine's cadence (a 30 fps
camera is fed every k = 30 / fps-th frame). Figures are printed, never asserted.

    .venv/bin/python benchmarks/gpu_engine.py [--model PATH] [--sizes 832x480,1280x720]
        [--batches 8,16] [--carry 1] [--steps 4,20] [--iters 2] [--attention-backend NAME]
        [--compile] [--peak-tflops N] [--mode replace]
    .venv/bin/python benchmarks/gpu_engine.py --tiny     # CPU, tiny models: checks the script
    .venv/bin/python benchmarks/gpu_engine.py --preset all [--engine wan-animate-2] [--tiny]

Without CUDA it exits with code 2 unless ``--tiny`` is given, which runs the same code on CPU
with the tiny random models of ``tests.wan_tiny`` (under a minute). The last line is JSON.

``--preset live|balanced|quality|all`` measures wan-animate's presets instead, each at its own
generation size (a 1280x720 camera), segment length, carry, steps and guidance, and prints per
preset the seconds per step, %-of-peak, VAE share, swapped fps, batch latency and peak memory
beside the capacity plan's prediction (``faceswap_cam.models.plan``), and the live preset once
more in the square window around the person that replace mode generates (row ``live-win``,
480x480 for a 1280x720 camera). Each runs with its preset's quantization (``--quantize``
overrides): the live rows in fp8 where the GPU has fp8 tensor cores, through the same torchao
config the daemon loads a checkpoint with, applied to the random-weight transformer in place
and, as diffusers' ``TorchAoConfig`` does, to the linear layers outside the model's
fp32-kept modules (a machine whose torchao does not import measures them unquantized and says
so). Runs go cheapest first, and the quantized ones before any unquantized run that costs more
than they do, which then gets a fresh model (quantizing cannot be undone): so quality runs
last, and a call's time limit there costs quality, not the live rows. A preset that fails costs
its row, with the error in the notes; SIGTERM (the call's ``timeout``) ends the run with the
table and the JSON line of what it measured, and code 124. Every warm-up batch runs one step
(the same shapes as all of them). It then writes the
measured DiT and VAE efficiency to ``benchmarks/results/gpu_efficiency.json``
(``--efficiency-file``), which ``faceswap-cam plan`` reads. Its last line is JSON too.

A preset run keeps to ``--budget-s`` (default 450 s: every preset in under 8 minutes), as
``benchmarks/call_time.py`` says: before the first preset it prints each run's predicted
seconds (the plan's batch times and allowances for building, quantizing and compiling), skips
a run that would not end inside the budget and stops at the budget with what it measured (exit
124, as at SIGTERM). ``--predict GPU`` prints that prediction for a GPU of the plan's table and
exits: no CUDA, no model. At the plan's assumed efficiency ``--preset all`` is predicted at
about 4 minutes on an H100/H200 for wan-animate (quality's two timed batches of 20 guided steps
at 1280x720 L=17 are most of it) and 5.5 for wan-animate-2 (quality's 40 guided steps at
848x480 L=17, and compiling for each preset's shape); neither has run on a GPU yet.

``--engine wan-animate-2`` (with ``--preset``; the default engine is wan-animate) measures
wan-animate-2's presets the same way (``benchmarks/gpu_presets.py`` has the details): the real-size
``WanAnimate2Transformer3DModel`` (the class defaults, as the plan's meta model) and the Wan VAE
with random weights in bf16 on the GPU, the base checkpoint's pipeline (CFG) for quality and the
distilled one for balanced and live, each preset through the engine's call (the camera frames
converted in and out around ``StreamingWanAnimate2.generate_uint8``) at its own size (848x480
for a 1280x720 camera), segment length, carry and steps, with the transformer
blocks compiled (``--no-compile`` to not: the generation attention's flex kernel only fits
compiled). Same columns, the plan's prediction beside each; the measured efficiency goes to the
file's ``engines["wan-animate-2"]`` section, which the plan reads for wan-animate-2's rows
(wan-animate's stay as measured); the engine's CPU work a new frame (those conversions and
the pipeline's letterboxing, at the real sizes even with ``--tiny``) goes to its ``host``
section (models/plan/host.py). ``--tiny`` runs it on the CPU with ``tests.wan2_tiny``'s tiny
models, at most 2 steps a batch, in well under a minute.

``--gpus N`` (N > 1) measures context parallelism (``faceswap_cam.models.wan.parallel``, Ulysses, as
``faceswap-cam engine serve --gpus N`` runs it): N ranks are spawned, one per GPU over NCCL; rank 0
first measures every configuration alone (the other GPUs idle), then all ranks split the DiT and
measure again, in lockstep. It prints each rank's seconds per step, the speed-up (one GPU's s/step
over the slowest rank's) and the scaling efficiency (speed-up / N), and writes the median scaling
efficiency to the efficiency file's ``scaling`` section, which ``faceswap-cam plan --gpus N`` and
``run --engine-gpus N`` then use instead of the assumed 80 % (not with ``--tiny``). Without N CUDA
GPUs it exits with code 2; ``--tiny --gpus 2`` checks that path on the CPU over gloo.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from faceswap_cam.models import defaults
from faceswap_cam.models.plan.animate import (
    ANIMATE_14B_PARAMS,
    ANIMATE_14B_TRANSFORMER,
    analytic_flops,
    analytic_work,
    counted_dit_flops,
)
from faceswap_cam.models.plan.cli import int_list, size_list
from faceswap_cam.models.plan.engines import as_run, preset_quantize, preset_shape
from faceswap_cam.models.plan.gpus import (
    EFFICIENCY_FILE,
    GPUS,
    Efficiency,
    Gpu,
    gpu_for_name,
    load_efficiency,
    save_scaling,
)
from faceswap_cam.models.plan.memory import RUNTIME_BYTES, activation_bytes, weight_bytes
from faceswap_cam.models.plan.timing import predict_timing
from faceswap_cam.models.plan.work import IMAGE_TOKENS, TEXT_TOKENS, Shape, Work
from faceswap_cam.models.presets import Preset, PresetName
from faceswap_cam.models.quantize import runnable_quantize
from faceswap_cam.models.wan.loading import LoadOptions, load_pipeline
from faceswap_cam.models.wan.streaming import (
    SegmentInputs,
    StreamingWanAnimate,
    check_segment,
)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the shared timing helpers and tests.wan_tiny

from benchmarks._timing import (  # noqa: E402
    hook_module,
    quiet,
    undone_on_exit,
    wrap_method,
)
from benchmarks.call_time import (  # noqa: E402
    ASSUMED_BUILD_S,
    BUDGET_S,
    STOPPED_CODE,
    Budget,
    PlannedRun,
    planned_runs,
    planned_text,
    stopped_by_signals,
)
from benchmarks.gpu_presets import (  # noqa: E402
    WAN2_ENGINE,
    Clock,
    PresetRow,
    asked_presets,
    default_dtype,
    detect_peak,
    finish,
    fmt,
    keep_fp32_parts,
    median,
    prediction_gpu,
    run_cost,
    save_measured,
    synchronize,
    timed,
    use_attention_backend,
    wan2_planned,
    wan2_preset_main,
    wan2_runs,
    wan2_work,
)

TINY_SIZES = "32x32,64x64"
#: The engines whose presets ``--preset`` measures (the first is the default).
ENGINES = ("wan-animate", WAN2_ENGINE)


# --- timing --------------------------------------------------------------------------------

@contextmanager
def instrumented(stream: StreamingWanAnimate, clock: Clock) -> Iterator[None]:
    pipe = stream.pipe
    with undone_on_exit([
        hook_module(pipe.transformer, "dit", clock),
        wrap_method(stream, "_denoise", "denoise", clock),
        wrap_method(stream, "_decode", "vae_decode", clock),
        wrap_method(pipe, "prepare_pose_latents", "vae_encode_pose", clock),
        wrap_method(pipe, "prepare_prev_segment_cond_latents", "vae_encode_cond", clock),
    ]):
        yield


# --- the model -----------------------------------------------------------------------------

def _diffusers() -> Any:
    return importlib.import_module("diffusers")


def flow_scheduler() -> Any:
    """Wan's flow-matching UniPC (the scheduler the checkpoints ship; its cost is negligible)."""
    return _diffusers().UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True,
        flow_shift=5.0, solver_order=2, solver_type="bh2", predict_x0=True,
        lower_order_final=True, final_sigmas_type="zero", timestep_spacing="linspace")


def assemble(transformer: Any, vae: Any, scheduler: Any) -> Any:
    """A WanAnimatePipeline without text encoder and CLIP: the per-batch path needs neither."""
    pipe = _diffusers().WanAnimatePipeline(
        tokenizer=None, text_encoder=None, image_processor=None, image_encoder=None,
        vae=vae, scheduler=scheduler, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_random_14b(device: torch.device) -> Any:
    """Real-size transformer and VAE, random weights, built in bf16 on ``device`` (the
    default initialisers run there: seconds, not the minutes 17B fp32 parameters take on CPU)."""
    diffusers = _diffusers()
    torch.manual_seed(0)
    with torch.device(device), default_dtype(torch.bfloat16):
        transformer = diffusers.WanAnimateTransformer3DModel(**ANIMATE_14B_TRANSFORMER)
        vae = diffusers.AutoencoderKLWan()
    keep_fp32_parts(transformer)
    return assemble(transformer.eval().requires_grad_(False), vae.eval().requires_grad_(False),
                    flow_scheduler())


def build_tiny(device: torch.device) -> Any:
    wan_tiny: Any = importlib.import_module("tests.wan_tiny")
    parts = wan_tiny.build_tiny_components()
    return assemble(parts["transformer"].to(device).eval().requires_grad_(False),
                    parts["vae"].to(device).eval().requires_grad_(False), parts["scheduler"])


class PresetPromptStream(StreamingWanAnimate):
    """The streaming engine with its prompt embeds handed in (encoded once for every size, or
    random); everything per batch is the engine's own."""

    def __init__(self, pipe: Any, *, prompt_embeds: torch.Tensor,
                 negative_prompt_embeds: torch.Tensor | None, **options: Any) -> None:
        self._preset_prompt = (prompt_embeds, negative_prompt_embeds)
        super().__init__(pipe, **options)

    def _encode_prompt(self, prompt: str, negative_prompt: str, max_sequence_length: int
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._preset_prompt


class RandomReferenceStream(PresetPromptStream):
    """... and random CLIP image embeds: a random-weight model has no CLIP. The reference's
    VAE latents are the engine's own."""

    def __init__(self, pipe: Any, *, image_embeds: torch.Tensor, **options: Any) -> None:
        self._preset_image = image_embeds
        super().__init__(pipe, **options)

    @torch.no_grad()
    def set_reference(self, image: PIL.Image.Image) -> None:
        pipe = self.pipe
        pixels = pipe.vae_image_processor.preprocess(
            image, height=self.height, width=self.width, resize_mode="fill",
        ).to(self.device, dtype=torch.float32)
        self._image_embeds = self._preset_image
        self._reference_latents = pipe.prepare_reference_image_latents(
            pixels, 1, generator=self.generator, device=self.device)
        self.reset()


@dataclass
class Conditioning:
    """What the per-reference encoders give, computed once for every configuration."""

    prompt: torch.Tensor
    negative: torch.Tensor | None
    image: torch.Tensor | None  # None: the checkpoint's CLIP encodes the reference
    prompt_s: float


def conditioning(pipe: Any, args: argparse.Namespace, device: torch.device) -> Conditioning:
    dtype = pipe.transformer.dtype
    cfg = args.guidance_scale > 1.0
    start = time.perf_counter()
    if pipe.text_encoder is not None:
        with torch.no_grad():
            positive, negative = pipe.encode_prompt(
                prompt=args.prompt, negative_prompt="", do_classifier_free_guidance=cfg,
                max_sequence_length=args.text_tokens, device=device)
        synchronize(device)
        took = time.perf_counter() - start
        if device.type == "cuda":
            # As the engine does: the prompt is fixed, UMT5-XXL leaves the GPU.
            pipe.text_encoder.to("cpu")
            torch.cuda.empty_cache()
        return Conditioning(positive.to(dtype), None if negative is None else negative.to(dtype),
                            None, took)
    config = pipe.transformer.config
    generator = torch.Generator(device).manual_seed(0)

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(size, generator=generator, device=device).to(dtype)

    text = (1, args.text_tokens, int(config.text_dim))
    return Conditioning(rand(*text), rand(*text) if cfg else None,
                        rand(1, args.image_tokens, int(config.image_dim)), 0.0)


# --- FLOPs ---------------------------------------------------------------------------------

def counted_flops(pipe: Any, shape: Shape, text_tokens: int, image_tokens: int) -> int:
    """FLOPs of one transformer forward, counted by ``FlopCounterMode`` (the plan's count)."""
    return counted_dit_flops(
        pipe.transformer, shape, text_tokens=text_tokens, image_tokens=image_tokens,
        scale_t=pipe.vae_scale_factor_temporal, scale_s=pipe.vae_scale_factor_spatial)[0]


# --- inputs --------------------------------------------------------------------------------

def segment_inputs(count: int, shape: Shape, face_size: int, seed: int) -> SegmentInputs:
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 255, (shape.height, shape.width, 3), dtype=np.uint8)
    face = rng.integers(0, 255, (face_size, face_size, 3), dtype=np.uint8)
    person = np.zeros((shape.height, shape.width), np.uint8)
    person[shape.height // 4: 3 * shape.height // 4, shape.width // 3: 2 * shape.width // 3] = 255
    # uint8 arrays, as the engine hands them (converted on the device on a GPU).
    frames = [np.roll(scene, i, axis=1) for i in range(count)]
    return SegmentInputs(
        pose=frames, face=[np.roll(face, i, axis=0) for i in range(count)],
        background=[f * (person[..., None] == 0) for f in frames], mask=[person] * count)


def without_background(inputs: SegmentInputs) -> SegmentInputs:
    return SegmentInputs(pose=inputs.pose, face=inputs.face)


# --- measuring -----------------------------------------------------------------------------

@dataclass
class Row:
    size: str
    segment: int
    new_frames: int
    steps: int
    step_s: float
    dit_s: float
    dit_tflops: float
    peak_share: float | None
    dit_batch_share: float
    vae_s: float
    vae_encode_s: float
    vae_decode_s: float
    other_s: float
    batch_s: float
    fps: float
    peak_mem_gib: float | None


def measure_shape(pipe: Any, shape: Shape, args: argparse.Namespace, device: torch.device, *,
                  cond: Conditioning, flops: int, peak: float | None
                  ) -> tuple[list[Row], dict[str, float]]:
    options: dict[str, Any] = {
        "height": shape.height, "width": shape.width, "mode": args.mode,
        "segment_frames": shape.segment, "carry": args.carry, "steps": min(args.steps),
        "guidance_scale": args.guidance_scale, "seed": 0}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    once: dict[str, float] = {}
    prompt: dict[str, Any] = {"prompt_embeds": cond.prompt,
                              "negative_prompt_embeds": cond.negative}
    if cond.image is None:
        stream: StreamingWanAnimate = PresetPromptStream(pipe, **prompt, **options)
    else:
        stream = RandomReferenceStream(pipe, image_embeds=cond.image, **prompt, **options)
    reference = PIL.Image.fromarray(
        np.random.default_rng(7).integers(0, 255, (shape.height, shape.width, 3), np.uint8))
    start = time.perf_counter()
    stream.set_reference(reference)
    synchronize(device)
    once["reference_s"] = time.perf_counter() - start

    face_size = int(pipe.transformer.config.motion_encoder_size)
    first = segment_inputs(shape.segment, shape, face_size, seed=1)
    following = segment_inputs(shape.new_frames, shape, face_size, seed=2)
    if args.mode == "animate":
        first, following = without_background(first), without_background(following)

    # Warm-up: the first segment and one that carries frames (compiles, allocator, kernels),
    # at one step: every step runs the same shapes, and quality's 2 x 20 steps at 1280x720
    # would cost the warm-up alone a minute and a half of a device call's time.
    start = time.perf_counter()
    stream.steps = 1
    stream.generate_uint8(first)
    stream.generate_uint8(following)
    synchronize(device)
    once["warmup_s"] = time.perf_counter() - start

    clock = Clock(device)
    rows = []
    with instrumented(stream, clock):
        for steps in args.steps:
            stream.steps = steps
            clock.take()
            # generate_uint8 ends with a copy to host memory: the GPU has finished.
            batches = [timed(partial(stream.generate_uint8, following), device)
                       for _ in range(args.iters)]
            spans = clock.take()
            # Spans that run once per batch: their median over the timed batches.
            denoise, pose, cond_encode, decode = (
                median(spans.get(label, []))
                for label in ("denoise", "vae_encode_pose", "vae_encode_cond", "vae_decode"))
            encode = pose + cond_encode
            batch = median(batches)
            dit = median(spans.get("dit", []))  # one forward
            dit_total = sum(spans.get("dit", [])) / args.iters  # all of a batch's forwards
            step = denoise / steps
            tflops = flops / dit / 1e12 if dit else 0.0
            vae = encode + decode
            other = batch - denoise - vae
            rows.append(Row(
                size=f"{shape.width}x{shape.height}", segment=shape.segment,
                new_frames=shape.new_frames, steps=steps, step_s=step, dit_s=dit,
                dit_tflops=tflops, peak_share=tflops / peak if peak else None,
                dit_batch_share=dit_total / batch, vae_s=vae,
                vae_encode_s=encode, vae_decode_s=decode, other_s=other, batch_s=batch,
                fps=shape.new_frames / batch, peak_mem_gib=None))
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device) / 2**30
        for row in rows:
            row.peak_mem_gib = peak_mem
    del stream
    return rows, once


# --- several GPUs --------------------------------------------------------------------------

@dataclass
class ScalingRow:
    size: str
    segment: int
    steps: int
    one_gpu_step_s: float
    rank_step_s: list[float]
    speedup: float
    efficiency: float
    one_gpu_fps: float
    fps: float


def _measure_all(pipe: Any, args: argparse.Namespace, device: torch.device,
                 cond: Conditioning) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for w, h in args.sizes:
        for new in args.batches:
            shape = Shape(w, h, new, new + args.carry)
            flops = analytic_flops(pipe.transformer.config, shape, args.text_tokens,
                                   args.image_tokens, scale_t=pipe.vae_scale_factor_temporal,
                                   scale_s=pipe.vae_scale_factor_spatial)
            shape_rows, _ = measure_shape(pipe, shape, args, device, cond=cond, flops=flops,
                                          peak=None)
            rows.update({f"{row.size} L={row.segment} steps={row.steps}": row
                         for row in shape_rows})
    return rows


def _rank_main(rank: int, args: argparse.Namespace, port: int, out_dir: str) -> None:
    """One rank of ``--gpus N``: rank 0 alone, then every rank with the DiT split."""
    from faceswap_cam.models.wan import parallel

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(args.gpus),
                       "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    quiet()
    if args.tiny:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.gpus))
    # The one-GPU baseline on rank 0 can take minutes while the others wait at a barrier.
    context = parallel.init_distributed("cpu" if args.tiny else "cuda",
                                        timeout=timedelta(hours=2))
    try:
        device = context.device
        pipe = load(args, device)
        cond = conditioning(pipe, args, device)
        alone: dict[str, Row] = {}
        if context.is_host:
            alone = _measure_all(pipe, args, device, cond)
        torch.distributed.barrier()
        if args.tiny:
            wan_tiny: Any = importlib.import_module("tests.wan_tiny")
            # The CPU has no accelerator count for diffusers' set-up: a script check only.
            with wan_tiny.cpu_context_parallel():
                parallel.enable_context_parallel(pipe.transformer, context)
        else:
            parallel.enable_context_parallel(pipe.transformer, context)
        if args.compile:
            pipe.transformer.compile_repeated_blocks(fullgraph=True)
        split = _measure_all(pipe, args, device, cond)
        result = {"alone": {k: asdict(v) for k, v in alone.items()},
                  "split": {k: asdict(v) for k, v in split.items()},
                  "device": detect_peak(device, None)[0]}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        parallel.shutdown_distributed()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record_scaling(args: argparse.Namespace, device: str,
                   rows: list[ScalingRow]) -> Path | None:
    """The median scaling efficiency into the efficiency file, for a GPU of the plan's table
    (not --tiny): the file's path, or None."""
    table_gpu = None if args.tiny else gpu_for_name(device)
    if table_gpu is None or not rows:
        return None
    path: Path = args.efficiency_file or EFFICIENCY_FILE
    save_scaling(path, table_gpu, args.gpus, statistics.median(row.efficiency for row in rows),
                 device=device, measured=time.strftime("%Y-%m-%d"))
    return path


def multi_gpu_main(args: argparse.Namespace) -> int:
    if not args.tiny and torch.cuda.device_count() < args.gpus:
        print(f"--gpus {args.gpus} needs {args.gpus} CUDA GPUs; torch sees "
              f"{torch.cuda.device_count()}. Run with --tiny to check the script on the CPU.",
              file=sys.stderr)
        return 2
    mp: Any = importlib.import_module("torch.multiprocessing")  # untyped
    with tempfile.TemporaryDirectory(prefix="gpu_engine_ranks_") as out_dir:
        mp.start_processes(_rank_main, args=(args, _free_port(), out_dir), nprocs=args.gpus,
                           join=True, start_method="spawn")
        ranks = [json.loads(Path(out_dir, f"rank{r}.json").read_text())
                 for r in range(args.gpus)]
    rows = []
    for key, one in ranks[0]["alone"].items():
        per_rank = [float(r["split"][key]["step_s"]) for r in ranks]
        slowest = max(per_rank)
        speedup = one["step_s"] / slowest if slowest else 0.0
        rows.append(ScalingRow(
            size=one["size"], segment=one["segment"], steps=one["steps"],
            one_gpu_step_s=one["step_s"], rank_step_s=per_rank, speedup=speedup,
            efficiency=speedup / args.gpus, one_gpu_fps=one["fps"],
            fps=ranks[0]["split"][key]["fps"]))

    title = ("TINY random models on CPU over gloo (a check of the script: the figures mean "
             "nothing)" if args.tiny else f"{ranks[0]['device']} x {args.gpus}")
    print()
    print(f"Wan2.2-Animate context parallelism (Ulysses), {title}")
    print(f"  mode {args.mode}, carry P={args.carry}, guidance {args.guidance_scale}, "
          f"attention {args.attention_backend or 'default'}, compile {args.compile}, "
          f"{args.iters} timed batches per row")
    print()
    ranks_head = " ".join(f"{f'r{r} s/st':>9}" for r in range(args.gpus))
    header = (f"  {'size':>9} {'L':>3} {'steps':>5} {'1 GPU s/st':>10} {ranks_head} "
              f"{'speed-up':>8} {'eff.':>5} {'fps 1':>6} {'fps N':>6}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for row in rows:
        rank_cells = " ".join(f"{v:>9.4f}" for v in row.rank_step_s)
        print(f"  {row.size:>9} {row.segment:>3} {row.steps:>5} {row.one_gpu_step_s:>10.4f} "
              f"{rank_cells} {row.speedup:>8.2f} {100 * row.efficiency:>4.0f}% "
              f"{row.one_gpu_fps:>6.2f} {row.fps:>6.2f}")
    print()
    print("  s/st: seconds per denoising step; speed-up: one GPU's s/step over the slowest")
    print(f"  rank's; eff.: speed-up / {args.gpus}; fps: new frames per second of batch time.")
    written = record_scaling(args, ranks[0]["device"], rows)
    if written is not None:
        print(f"  median scaling efficiency written to {written} (faceswap-cam plan --gpus "
              f"{args.gpus} reads it)")
    print(json.dumps({
        "benchmark": "gpu_engine_parallel",
        "device": ranks[0]["device"],
        "gpus": args.gpus,
        "tiny": args.tiny,
        "model": args.model or ("tiny random" if args.tiny else "random Wan2.2-Animate-14B"),
        "mode": args.mode,
        "attention_backend": args.attention_backend,
        "compile": args.compile,
        "rows": [asdict(row) for row in rows],
        "efficiency_file": None if written is None else str(written),
    }))
    return 0


# --- presets -------------------------------------------------------------------------------

#: The label of the live preset's row in the person window.
WINDOW_LABEL = "live-win"


def quantized_as_loaded(model: Any) -> Callable[[Any, str], bool]:
    """Which modules diffusers' ``TorchAoConfig`` quantizes when it loads ``model``: the
    linear layers outside its ``_keep_in_fp32_modules`` (the time embedder, norms), which stay
    fp32 (:func:`keep_fp32_parts`), and torchao's fp8 takes only bf16 weights."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())

    def quantized(module: Any, name: str) -> bool:
        weight = f"{name}.weight"
        return isinstance(module, torch.nn.Linear) and not any(
            f"{key}." in weight or key == weight for key in keep)

    return quantized


def quantize_transformer(transformer: Any, kind: str, device: torch.device,
                         notes: list[str]) -> str | None:
    """The random-weight transformer quantized in place as the daemon loads a checkpoint
    (the same torchao config); what it runs afterwards: ``none`` with the reason in ``notes``
    where this machine cannot (no torchao for this torch, no fp8 tensor cores), None when the
    conversion failed part-way (the transformer is then unusable)."""
    if kind == "none":
        return kind
    from faceswap_cam.models.quantize import torchao_config

    start = time.perf_counter()
    try:
        config = torchao_config(kind, str(device))
        quantize_: Any = importlib.import_module("torchao.quantization").quantize_
    except Exception as exc:  # torchao built for another torch fails in many ways: measure on
        notes.append(f"{kind} not measured: {type(exc).__name__}: {exc}"[:300])
        print(f"  cannot quantize to {kind} here ({exc}): measuring unquantized", flush=True)
        return "none"
    try:
        quantize_(transformer, config, filter_fn=quantized_as_loaded(transformer))
    except Exception as exc:
        notes.append(f"{kind} failed while converting: {type(exc).__name__}: {exc}"[:300])
        print(f"  quantizing to {kind} failed part-way ({exc})", flush=True)
        return None
    synchronize(device)
    print(f"  transformer quantized to {kind} in {time.perf_counter() - start:.1f} s",
          flush=True)
    return kind


def preset_runs(args: argparse.Namespace) -> list[tuple[Preset, Shape, str]]:
    """wan-animate's asked presets, each at its own size (``--tiny``: ``--sizes``' first),
    and the live one once more in the person's square window: (preset, shape, label)."""
    runs: list[tuple[Preset, Shape, str]] = []
    for preset in asked_presets("wan-animate", args.preset):
        width, height = args.sizes[0]
        shape = (Shape(width, height, preset.segment_frames - preset.carry,
                       preset.segment_frames) if args.tiny else preset_shape(preset))
        runs.append((preset, shape, preset.name.value))
        side = min(shape.width, shape.height)
        if preset.name == PresetName.LIVE and side != max(shape.width, shape.height):
            # What replace mode generates around a person who fits a square (--gen-window).
            runs.append((preset, Shape(side, side, shape.new_frames, shape.segment),
                         WINDOW_LABEL))
    return runs


def preset_work(pipe: Any, shape: Shape, *, args: argparse.Namespace) -> Work:
    """A batch's FLOPs as the plan counts them: the real model's analytic count (``--tiny``:
    the same formula on the tiny model's config, the VAE uncounted)."""
    if not args.tiny:
        return analytic_work(shape)
    forward = analytic_flops(pipe.transformer.config, shape, args.text_tokens,
                             args.image_tokens, scale_t=pipe.vae_scale_factor_temporal,
                             scale_s=pipe.vae_scale_factor_spatial)
    return Work(forward, forward, 0, "analytic (tiny config)")


class Model:
    """The pipeline the preset runs share, with its transformer's quantization so far (which
    cannot be undone: an unquantized run after a quantized one gets a fresh model). What goes
    wrong is noted in ``notes``, and costs one run, not the rest."""

    def __init__(self, pipe: Any, args: argparse.Namespace, device: torch.device,
                 notes: list[str]) -> None:
        self.pipe, self.args, self.device, self.notes = pipe, args, device, notes
        self.running = "none"
        self.unavailable: set[str] = set()  # kinds this machine cannot run: run unquantized
        self.failed: set[str] = set()  # kinds whose conversion failed: not measured
        #: No later run can go on: a CUDA error left the context unusable (every later run
        #: would fail the same way, or hang), or a fresh model could not be built. The run
        #: ends with its table.
        self.lost = False

    def quantized_for(self, asked: str, label: str) -> bool:
        """The transformer as ``asked`` (or unquantized where this machine cannot run that);
        False: the conversion failed, and the run is skipped (or no model: ``lost``)."""
        wanted = "none" if asked in self.unavailable else asked
        if wanted in self.failed:
            self.notes.append(f"skipped {label}: converting to {wanted} failed")
            return False
        if self.running not in (wanted, "none"):
            del self.pipe
            try:
                self.pipe = rebuilt(self.args, self.device)
            except Exception as exc:  # out of memory, say: no model for any later run
                self.notes.append(f"a fresh model for {label} failed: {type(exc).__name__}: "
                                  f"{exc}"[:300] + "; the runs after it were not tried")
                print(f"  a fresh model failed ({exc})", flush=True)
                self.lost = True
                return False
            self.running = "none"
        if wanted != self.running:
            outcome = quantize_transformer(self.pipe.transformer, wanted, self.device,
                                           self.notes)
            if outcome is None:  # failed part-way: the weights may be half converted
                self.failed.add(wanted)
                self.notes.append(f"skipped {label}: converting to {wanted} failed")
                self.running = wanted  # not "none" any more: the next plain run rebuilds
                return False
            if outcome != wanted:
                self.unavailable.add(wanted)
            self.running = outcome
        return True

    def measured(self, preset: Preset, shape: Shape, label: str, *, gpu: Gpu,
                 table_gpu: Gpu | None, peak: float | None,
                 efficiency: Efficiency) -> PresetRow | None:
        """The run's row, or None where it failed (noted; ``lost`` after a CUDA error)."""
        try:
            return measure_preset(self.pipe, preset, shape, label, args=self.args,
                                  device=self.device, gpu=gpu, table_gpu=table_gpu, peak=peak,
                                  efficiency=efficiency, running=self.running)
        except Exception as exc:  # one preset's failure costs its row, not the run
            self.notes.append(f"{label} failed: {type(exc).__name__}: {exc}"[:300])
            print(f"  preset {label} failed: {exc}", flush=True)
            if self.device.type == "cuda" and not isinstance(exc, torch.OutOfMemoryError) \
                    and "CUDA" in str(exc):
                self.lost = True
                self.notes.append("the runs after it were not tried: the CUDA context is "
                                  "unusable after a CUDA error")
            return None


def preset_main(args: argparse.Namespace, device: torch.device, budget: Budget) -> int:
    """Every asked preset of wan-animate at its own size, measured beside the plan's
    prediction, inside ``budget`` (benchmarks/call_time.py); writes the measured efficiency
    the plan reads."""
    gpu_name, peak = detect_peak(device, args.peak_tflops)
    table_gpu, gpu = prediction_gpu(device, gpu_name, peak)
    efficiency = load_efficiency(gpu, args.efficiency_file)
    rows: list[PresetRow] = []
    notes: list[str] = []
    start = time.perf_counter()
    # The only reference to the pipeline: a fresh model replaces it, and the old one's memory
    # is freed first.
    model = Model(load(args, device), args, device, notes)
    synchronize(device)
    build_s = time.perf_counter() - start
    runs = preset_runs(args)
    # What each run asks for, as the daemon would load it here: a preset's fp8 only where this
    # GPU runs fp8 (compute capability, torchao), a --quantize given as it is.
    asked = {label: runnable_quantize(
        preset_quantize(preset) if args.quantize == "auto" else args.quantize, str(device),
        explicit=args.quantize != "auto") for preset, _, label in runs}
    runs = run_order(runs, asked)
    planned = planned_runs(runs, asked, work=partial(preset_work, model.pipe, args=args), gpu=gpu,
                           efficiency=efficiency, iters=args.iters, rebuild_s=build_s,
                           counts_flops=True)
    for line in planned_text(planned, budget, efficiency.source):
        print(line, flush=True)
    with stopped_by_signals(budget) as stop:
        for index in budget.runnable(planned, stop, skip=lambda label, why: notes.append(
                f"skipped {label}: {why}")):
            (preset, shape, label), run = runs[index], planned[index]
            began = time.monotonic()
            if not model.quantized_for(asked[label], label):
                if model.lost:
                    break
                continue
            row = model.measured(preset, shape, label, gpu=gpu, table_gpu=table_gpu,
                                 peak=peak, efficiency=efficiency)
            if row is None:
                if model.lost:
                    break
                continue
            # Only a run that measured says how the predictions compare with this machine.
            budget.record(run.seconds, time.monotonic() - began)
            rows.append(row)
            print(f"  measured preset {label}: {row.batch_s:.3f} s/batch", flush=True)
            save_measured(args, table_gpu, gpu_name, rows, "wan-animate")
    if stop.stopped:
        notes.append(f"STOPPED by {stop.why} after {len(rows)} of {len(runs)} runs")
    if any(r[2] == WINDOW_LABEL for r in runs):
        notes.insert(0, f"{WINDOW_LABEL}: live in the square window around the person that "
                     "replace mode generates (--gen-window person)")
    code = finish(args, engine="wan-animate", title="Wan2.2-Animate presets",
                  gpu_name=gpu_name, table_gpu=table_gpu, peak=peak, build_s=build_s,
                  efficiency=efficiency, rows=rows, notes=notes,
                  complete=len(rows) == len(runs))
    return STOPPED_CODE if stop.stopped else code


def predict_main(args: argparse.Namespace) -> int:
    """``--predict GPU``: how long ``--preset`` of ``--engine`` would run on that GPU, run by
    run and in all against the budget (benchmarks/call_time.py), from the plan alone: it
    builds no model and needs no CUDA, so a device call can be sized before it is made."""
    gpu = GPUS[args.predict]
    efficiency = load_efficiency(gpu, args.efficiency_file, args.engine)
    if args.engine == WAN2_ENGINE:
        planned = wan2_planned(
            wan2_runs(asked_presets(WAN2_ENGINE, args.preset), args), args,
            work=partial(wan2_work, None, tiny=False, image_tokens=args.image_tokens), gpu=gpu,
            efficiency=efficiency, rebuild_s=ASSUMED_BUILD_S)
    else:
        runs = preset_runs(args)
        asked = {label: as_run(preset_quantize(preset) if args.quantize == "auto"
                               else args.quantize, gpu) for preset, _, label in runs}
        planned = planned_runs(run_order(runs, asked), asked, work=analytic_work, gpu=gpu,
                               efficiency=efficiency, iters=args.iters,
                               rebuild_s=ASSUMED_BUILD_S, counts_flops=True)
    planned.insert(0, PlannedRun("build (ASSUMED)", ASSUMED_BUILD_S))
    budget = Budget(args.budget_s)
    print(f"gpu_engine.py --preset {args.preset} --engine {args.engine} on {gpu.name}, "
          f"{args.iters} timed batches a run:")
    for line in planned_text(planned, budget, efficiency.source):
        print(line)
    total = sum(run.seconds for run in planned)
    print(json.dumps({
        "benchmark": "gpu_engine_predict", "engine": args.engine, "preset": args.preset,
        "gpu": gpu.key, "iters": args.iters, "efficiency_source": efficiency.source,
        "assumed_efficiency": efficiency.assumed, "budget_s": args.budget_s,
        "total_s": round(total, 1), "fits": total <= args.budget_s,
        "runs": [{"label": run.label, "seconds": round(run.seconds, 1)} for run in planned]}))
    return 0


def run_order(runs: list[tuple[Preset, Shape, str]], asked: dict[str, str]
              ) -> list[tuple[Preset, Shape, str]]:
    """Cheapest first, so that a run the call's time limit stops has measured the most; and
    the quantized runs (the live preset's fp8: what the plan's headline rows hang on) before
    any unquantized run that costs more than all of them, which then needs a fresh model
    (quantizing cannot be undone). Without quantized runs, simply cheapest first."""
    def cost(run: tuple[Preset, Shape, str]) -> float:
        return run_cost(run[0], run[1])

    quantized = sorted((r for r in runs if asked[r[2]] != "none"), key=cost)
    plain = sorted((r for r in runs if asked[r[2]] == "none"), key=cost)
    if not quantized:
        return plain
    ceiling = cost(quantized[-1])
    return ([r for r in plain if cost(r) <= ceiling] + quantized
            + [r for r in plain if cost(r) > ceiling])


def rebuilt(args: argparse.Namespace, device: torch.device) -> Any:
    """A fresh pipeline as :func:`load` builds it, the old one's memory freed first."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    start = time.perf_counter()
    pipe = load(args, device)
    synchronize(device)
    print(f"  a fresh unquantized model in {time.perf_counter() - start:.1f} s", flush=True)
    return pipe


def measure_preset(pipe: Any, preset: Preset, shape: Shape, label: str, *,
                   args: argparse.Namespace, device: torch.device, gpu: Gpu,
                   table_gpu: Gpu | None, peak: float | None, efficiency: Efficiency,
                   running: str) -> PresetRow:
    """One preset's row: measured at ``shape`` with the transformer as it is (``running``),
    beside the plan's prediction of the generation (what this call times)."""
    scale_t, scale_s = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    run = argparse.Namespace(**{**vars(args), "steps": [preset.steps], "carry": preset.carry,
                                "guidance_scale": preset.guidance_scale})
    cond = conditioning(pipe, run, device)
    forward = counted_flops(pipe, shape, args.text_tokens, args.image_tokens)
    analytic = analytic_flops(pipe.transformer.config, shape, args.text_tokens,
                              args.image_tokens, scale_t=scale_t, scale_s=scale_s)
    if forward < 0.9 * analytic:  # a kernel the counter cannot see
        forward = analytic
    work = analytic_work(shape) if not args.tiny else Work(
        forward, forward, 0, "FlopCounterMode")
    work = Work(forward, work.dit_linear_flops * forward // max(1, work.dit_flops),
                work.vae_flops, work.source)
    predicted = predict_timing(
        work, steps=preset.steps, guidance_scale=preset.guidance_scale,
        segment=shape.segment, carry=preset.carry, gpu=gpu, efficiency=efficiency,
        quantize=running)
    run_peak = peak
    if running == "fp8":
        run_peak = table_gpu.fp8_tflops if table_gpu and table_gpu.fp8_tflops else None
    measured, _ = measure_shape(pipe, shape, run, device, cond=cond, flops=forward,
                                peak=run_peak)
    row = measured[0]
    vae_tflops = work.vae_flops / row.vae_s / 1e12 if row.vae_s and work.vae_flops else None
    return PresetRow(
        preset=label, engine="wan-animate", variant=None,
        guidance_scale=preset.guidance_scale, size=row.size, segment=shape.segment,
        carry=preset.carry, steps=preset.steps, step_s=row.step_s,
        peak_share=row.peak_share, dit_s=row.dit_batch_share * row.batch_s,
        vae_s=row.vae_s, vae_share=row.vae_s / row.batch_s, fps=row.fps,
        batch_s=row.batch_s, peak_mem_gib=row.peak_mem_gib, dit_efficiency=row.peak_share,
        vae_efficiency=vae_tflops / peak if vae_tflops and peak else None, quantize=running,
        predicted_step_s=predicted.dit_s / preset.steps,
        predicted_vae_share=predicted.vae_s / predicted.batch_s,
        predicted_fps=predicted.engine_fps, predicted_batch_s=predicted.batch_s,
        predicted_memory_gb=(weight_bytes(ANIMATE_14B_PARAMS, running)
                             + activation_bytes(shape) + RUNTIME_BYTES) / 1e9,
        assumed_efficiency=efficiency.assumed)


# --- CLI -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Wan2.2-Animate-14B streaming engine GPU benchmark (see the module doc)")
    parser.add_argument("--model", default=None,
                        help="local diffusers checkpoint folder (default: random weights)")
    parser.add_argument("--sizes", type=size_list, default=None,
                        help=f"generation sizes WxH (default 832x480,1280x720; --tiny "
                             f"{TINY_SIZES})")
    parser.add_argument("--batches", type=int_list, default=[8, 16],
                        help="new frames per batch, L = new + carry (default 8,16)")
    parser.add_argument("--carry", type=int, default=defaults.CARRY,
                        choices=defaults.CARRY_CHOICES, help="carried frames P")
    # 4: a step-distilled LoRA's count; and the engine's own default.
    parser.add_argument("--steps", type=int_list, default=[4, defaults.STEPS],
                        help="denoising steps")
    parser.add_argument("--iters", type=int, default=2, help="timed batches per step count")
    parser.add_argument("--mode", choices=defaults.MODES, default=defaults.MODE)
    parser.add_argument("--guidance-scale", type=float, default=defaults.GUIDANCE_SCALE,
                        help="> 1 runs the DiT twice per step (CFG)")
    parser.add_argument("--attention-backend", default=None,
                        help="diffusers attention backend (e.g. flash, _flash_3, sage, native)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the repeated transformer blocks (default: off; on "
                             "for --engine wan-animate-2 on a GPU, whose flex attention needs "
                             "it)")
    parser.add_argument("--quantize", choices=("auto", "none", "fp8", "int8"), default="auto",
                        help="with --preset (wan-animate): the transformer's quantization, "
                        "auto: each preset's own (live: fp8 where the GPU has it)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of this GPU (detected for H100/H200/A100)")
    parser.add_argument("--text-tokens", type=int, default=TEXT_TOKENS,
                        help="prompt length (the pipeline pads to max_sequence_length=512)")
    parser.add_argument("--prompt", default="", help="prompt, with --model's text encoder")
    parser.add_argument("--image-tokens", type=int, default=IMAGE_TOKENS,
                        help="CLIP tokens of the random image embeds")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU, tiny random models from tests.wan_tiny: checks the script")
    parser.add_argument("--preset", choices=[*(p.value for p in PresetName), "all"],
                        help="measure these presets of --engine at their own size beside the "
                             "plan's prediction, and write the measured efficiency")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="with --preset: seconds the run may take from its start; a run "
                             "predicted not to end inside it is skipped, and at the budget "
                             "the run stops with what it measured (default %(default)s)")
    parser.add_argument("--predict", choices=sorted(GPUS), default=None,
                        help="with --preset: print how long the run would take on this GPU "
                             "(the capacity plan's prediction) and exit; needs no CUDA")
    parser.add_argument("--engine", choices=ENGINES, default=ENGINES[0],
                        help="whose presets --preset measures (default %(default)s)")
    parser.add_argument("--efficiency-file", type=Path, default=None,
                        help="where --preset writes the measured efficiency and --gpus N the "
                             f"scaling efficiency (default {EFFICIENCY_FILE})")
    parser.add_argument("--gpus", type=int, default=1,
                        help="N > 1: context parallelism over N GPUs, with speed-up and "
                             "scaling efficiency against one GPU")
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error("--gpus must be >= 1")
    if args.budget_s <= 0:
        parser.error("--budget-s must be > 0")
    if args.predict and (not args.preset or args.tiny or args.gpus > 1):
        parser.error("--predict sizes a --preset run on one GPU (not --tiny, not --gpus)")
    if args.engine == WAN2_ENGINE:
        if not args.preset:
            parser.error(f"--engine {WAN2_ENGINE} measures presets: add --preset NAME|all")
        if args.model or args.gpus > 1:
            parser.error(f"--engine {WAN2_ENGINE} runs random weights on one GPU (no --model, "
                         "no --gpus)")
    if args.compile is None:
        args.compile = args.engine == WAN2_ENGINE and not args.tiny
    if args.sizes is None:
        args.sizes = size_list(TINY_SIZES if args.tiny else "832x480,1280x720")
    for width, height in args.sizes:
        if width % 16 or height % 16:
            parser.error(f"sizes must be multiples of 16, got {width}x{height}")
    try:
        for new in args.batches:
            check_segment(new + args.carry, args.carry)  # L = new + P must be 4n+1
    except ValueError as exc:
        parser.error(f"{new} new frames + {args.carry} carried: {exc}")
    if args.iters < 1 or not args.steps or min(args.steps) < 1:
        parser.error("--iters and --steps must be >= 1")
    return args


def load(args: argparse.Namespace, device: torch.device) -> Any:
    """The pipeline, with ``--attention-backend`` applied (compile is applied by the caller,
    the same way for every model)."""
    if args.model:
        pipe = load_pipeline(args.model, LoadOptions(device=str(device)))
    else:
        pipe = build_tiny(device) if args.tiny else build_random_14b(device)
    use_attention_backend(pipe.transformer, args, device)
    return pipe


def flop_text(flops: float) -> str:
    return f"{flops / 1e12:9.2f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:9.4f} GFLOP"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)  # from here: the imports before are seconds
    if args.predict:
        return predict_main(args)
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_engine.py needs a CUDA GPU and torch sees none. "
              "Run with --tiny to check the script on the CPU with tiny models.",
              file=sys.stderr)
        return 2
    if args.gpus > 1:
        return multi_gpu_main(args)
    quiet()
    device = torch.device("cpu" if args.tiny else "cuda")
    if args.preset:
        if args.engine == WAN2_ENGINE:
            return wan2_preset_main(args, device, budget)
        return preset_main(args, device, budget)
    gpu, peak = detect_peak(device, args.peak_tflops)

    start = time.perf_counter()
    pipe = load(args, device)
    synchronize(device)
    build_s = time.perf_counter() - start
    cond = conditioning(pipe, args, device)
    transformer = pipe.transformer
    params = sum(p.numel() for p in transformer.parameters())
    weights_gib = (torch.cuda.memory_allocated(device) / 2**30
                   if device.type == "cuda" else None)

    shapes = [Shape(w, h, new, new + args.carry)
              for w, h in args.sizes for new in args.batches]
    # FLOPs before compiling: the counter sees the eager kernels.
    flops: dict[str, dict[str, int]] = {}
    skipped: dict[str, str] = {}
    for shape in list(shapes):
        try:
            counted = counted_flops(pipe, shape, args.text_tokens, args.image_tokens)
        except torch.OutOfMemoryError:
            skipped[shape.label] = "out of GPU memory in one transformer forward"
            shapes.remove(shape)
            torch.cuda.empty_cache()
            continue
        analytic = analytic_flops(transformer.config, shape, args.text_tokens,
                                  args.image_tokens, scale_t=pipe.vae_scale_factor_temporal,
                                  scale_s=pipe.vae_scale_factor_spatial)
        flops[shape.label] = {"counted": counted, "analytic": analytic}
    if args.compile:
        transformer.compile_repeated_blocks(fullgraph=True)

    rows: list[Row] = []
    once: dict[str, dict[str, float]] = {}
    sources: dict[str, str] = {}
    for shape in shapes:
        f = flops[shape.label]
        # The counter misses attention run by kernels it has no formula for (flash-attn,
        # sage...): then the analytic count is the better figure.
        use_counted = f["counted"] >= 0.9 * f["analytic"]
        sources[shape.label] = "FlopCounterMode" if use_counted else "analytic"
        try:
            shape_rows, shape_once = measure_shape(
                pipe, shape, args, device, cond=cond,
                flops=f["counted"] if use_counted else f["analytic"], peak=peak)
        except torch.OutOfMemoryError:
            skipped[shape.label] = "out of GPU memory while generating"
            torch.cuda.empty_cache()
            continue
        rows += shape_rows
        once[shape.label] = shape_once
        for row in shape_rows:
            print(f"  measured {row.size} L={row.segment} steps={row.steps}: "
                  f"{row.batch_s:.3f} s/batch", flush=True)

    title = f"checkpoint {args.model}" if args.model else "random weights"
    if args.tiny:
        title = ("TINY " + ("checkpoint" if args.model else "random models")
                 + " on CPU (a check of the script: the figures mean nothing)")
    print()
    print(f"Wan2.2-Animate streaming engine, {title}")
    print(f"  device {gpu}, torch {torch.__version__}, dtype {transformer.dtype}, "
          f"DiT {params:,} parameters, built/loaded in {build_s:.1f} s"
          + (f", weights {weights_gib:.1f} GiB" if weights_gib is not None else ""))
    print(f"  mode {args.mode}, carry P={args.carry}, guidance {args.guidance_scale}, "
          f"attention {args.attention_backend or 'default'}, compile {args.compile}, "
          f"bf16 peak {fmt(peak, '.0f')} TFLOP/s, {args.iters} timed batches per row")
    print()
    header = (f"  {'size':>9} {'L':>3} {'new':>3} {'steps':>5} {'s/step':>8} {'DiT s':>8} "
              f"{'TFLOP/s':>8} {'%peak':>6} {'DiT%':>5} {'VAE s':>7} {'other s':>7} {'batch s':>8} "
              f"{'fps':>6} {'mem GiB':>7}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for row in rows:
        print(f"  {row.size:>9} {row.segment:>3} {row.new_frames:>3} {row.steps:>5} "
              f"{row.step_s:>8.4f} {row.dit_s:>8.4f} {row.dit_tflops:>8.2f} "
              f"{fmt(None if row.peak_share is None else 100 * row.peak_share, '.1f'):>6} "
              f"{100 * row.dit_batch_share:>5.1f} "
              f"{row.vae_s:>7.3f} {row.other_s:>7.3f} {row.batch_s:>8.3f} {row.fps:>6.2f} "
              f"{fmt(row.peak_mem_gib, '.1f'):>7}")
    print()
    print("  s/step: denoising step (DiT forward + scheduler); DiT s: one transformer forward;")
    print("  %peak: DiT TFLOP/s over the dense bf16 peak; DiT%: DiT share of the batch time;")
    print("  VAE s: pose + conditioning encodes + decode per batch; other s: frame pre/post-")
    print("  processing and latent preparation; batch s (measured) = steps x s/step + VAE + other;")
    print("  fps = new frames / batch s.")
    print("  FLOPs per DiT forward:")
    for label, f in flops.items():
        print(f"    {label:<18} counted {flop_text(f['counted'])}, analytic "
              f"{flop_text(f['analytic'])} -> using {sources[label]}")
    for label, why in skipped.items():
        print(f"  skipped {label}: {why}")
    print(f"  once per stream (not in batch s): prompt encode {cond.prompt_s:.3f} s"
          + (" (random embeds)" if cond.image is not None else "") + "; reference encode "
          + ", ".join(f"{label} {v['reference_s']:.3f} s" for label, v in once.items()))

    print(json.dumps({
        "benchmark": "gpu_engine",
        "device": gpu,
        "tiny": args.tiny,
        "model": args.model or ("tiny random" if args.tiny else "random Wan2.2-Animate-14B"),
        "torch": torch.__version__,
        "dtype": str(transformer.dtype),
        "dit_params": params,
        "weights_gib": weights_gib,
        "build_s": round(build_s, 2),
        "mode": args.mode,
        "carry": args.carry,
        "guidance_scale": args.guidance_scale,
        "attention_backend": args.attention_backend,
        "compile": args.compile,
        "peak_tflops": peak,
        "iters": args.iters,
        "flops_per_forward": flops,
        "flops_source": sources,
        "prompt_encode_s": cond.prompt_s,
        "once_per_shape": once,
        "rows": [asdict(row) for row in rows],
        "skipped": skipped,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
