"""Capacity plan: what a GPU will do with each engine, preset and generation size.

Engines: ``wan-animate`` (Wan2.2-Animate-14B) and ``wan-animate-2`` (Wan-Animate-2-14B, base
and distilled: one architecture).

``faceswap-cam plan`` and ``doctor`` print it, the daemon takes its starting cadence from it,
and ``benchmarks/gpu_engine.py`` prints it beside what it measures (and writes the efficiency
it measured, which this module reads back).

The model of one batch (``L`` frames of which ``L - P`` are new):

* DiT: ``steps x forwards-per-step (2 with CFG) x FLOPs of one forward``. The forward is counted
  with ``torch.utils.flop_counter.FlopCounterMode`` on the real-size transformer built on the
  meta device from the model's config (no weights, no memory: a few seconds on a CPU), or,
  where torch must not be imported (the daemon), analytically (:func:`analytic_flops`,
  :func:`analytic_animate_2`), which agrees with the counter within a few per cent
  (tests/models/test_plan.py, tests/models/test_plan_wan2.py).
* Wan-Animate-2 adds, once per segment, a reference-extraction forward over the driving
  segment's tokens, whose per-layer K/V every denoising forward then attends to (each
  generated latent frame to its own driving frame's tokens, through a flex block mask); and
  its unconditional CFG branch skips one block. Nothing is cached from one segment to the
  next: the previous segment reaches the next only as pixel conditioning (a VAE encode).
* VAE: two encodes of ``L`` frames (pose video, conditioning video) and one decode, counted the
  same way.
* time = DiT FLOPs / (peak x efficiency) + VAE FLOPs / (bf16 peak x VAE efficiency). With
  ``--quantize fp8`` the DiT's linear layers run at the fp8 peak (torchao's dynamic float8
  matmuls); attention stays in bf16. int8 is weight-only: it saves memory, not time. Frame
  pre/post-processing (pose, masks, compositing) is left out.
* efficiency: the share of the peak our own GPU benchmark measured (``EFFICIENCY_FILE``), else
  ``ASSUMED_EFFICIENCY``, labelled as an assumption.
* swapped fps and cadence: the engine makes ``L - P`` frames per batch; the daemon feeds it
  every k-th camera frame with k = ceil(camera fps x seconds per frame x margin), so the screen
  shows camera fps / k swapped frames per second.
* capture-to-screen latency = batch accumulation ((L - P) x k / camera fps) + the batch's
  generation time + one camera frame.
* memory: weights (bf16; fp8/int8 store the linear layers' weights in one byte) of the DiT, VAE
  and CLIP image encoder, plus an activation estimate (:func:`activation_bytes`;
  Wan-Animate-2's adds its per-segment reference K/V cache:
  :func:`animate_2_activation_bytes`).

Constants and the analytic count need no torch; everything that builds a model imports torch
and diffusers lazily.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faceswap_cam.models import defaults
from faceswap_cam.models.batching import cadence_for, generation_size
from faceswap_cam.models.presets import Preset, presets_for

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the models

#: Wan2.2-Animate-14B's transformer (``WanAnimateTransformer3DModel``): the class defaults plus
#: the checkpoint's I2V image cross-attention (add_k_proj/add_v_proj from the 5120-wide
#: projected CLIP tokens), which the class default leaves out. Written out in full so that the
#: analytic count needs no diffusers; tests check it against the class defaults.
ANIMATE_14B_OVERRIDES: dict[str, Any] = {"added_kv_proj_dim": 5120}
ANIMATE_14B_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128,
    "in_channels": 36, "latent_channels": 16, "out_channels": 16, "text_dim": 4096,
    "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40, "image_dim": 1280,
    "motion_encoder_size": 512, "face_encoder_num_heads": 4, "inject_face_latents_blocks": 5,
    **ANIMATE_14B_OVERRIDES,
}
TEXT_TOKENS = 512  # UMT5 max_sequence_length the pipeline pads to
IMAGE_TOKENS = 257  # CLIP ViT-H/14 at 224 px: 16 x 16 patches + class token
#: The Wan 2.1 VAE (``AutoencoderKLWan()``'s defaults) that Animate uses.
VAE_SCALE_TEMPORAL = 4
VAE_SCALE_SPATIAL = 8
#: Parameters of the CLIP ViT-H/14 vision tower that encodes the reference (it stays on the GPU
#: for reference changes; the UMT5 text encoder leaves it after the prompt is encoded).
CLIP_VISION_PARAMS = 632_000_000

#: Wan-Animate-2-14B's transformer (``WanAnimate2Transformer3DModel``), base and distilled
#: checkpoints alike: the class defaults, which describe the released 14B (nothing is
#: downloaded to read a checkpoint's config). Written out for the analytic count; tests check
#: them against the class.
ANIMATE_2_14B_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2), "text_len": 512, "in_dim": 36, "dim": 5120, "ffn_dim": 13824,
    "freq_dim": 256, "text_dim": 4096, "out_dim": 16, "num_heads": 40, "num_layers": 40,
    "use_img_emb": True,
}
#: Width of the CLIP features Wan-Animate-2's image projection takes (fixed in the class).
ANIMATE_2_IMAGE_DIM = 1280
#: The block the unconditional CFG branch of Wan-Animate-2 skips (by index).
ANIMATE_2_UNCOND_SKIPPED_BLOCK = 9

#: Engines the plan knows a model for, with the package whose ``presets`` module registers
#: their presets.
PLANNED_ENGINES: dict[str, str] = {"wan-animate": "faceswap_cam.models.wan",
                                   "wan-animate-2": "faceswap_cam.models.wan2"}
PRESET_PACKAGES: dict[str, str] = dict(PLANNED_ENGINES)


@dataclass(frozen=True)
class Shape:
    """One generation: ``width x height``, segment length L, ``new_frames`` = L - P."""

    width: int
    height: int
    new_frames: int
    segment: int  # L

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height} L={self.segment}"

    def latent_frames(self, scale_t: int = VAE_SCALE_TEMPORAL) -> int:
        return (self.segment - 1) // scale_t + 1


# --------------------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class Gpu:
    key: str
    name: str
    #: Dense (no sparsity) tensor-core peaks, TFLOP/s, with fp32 accumulation as PyTorch's
    #: bf16 matmuls and torchao's float8 matmuls use. fp8 None: no FP8 tensor cores (< sm_89).
    bf16_tflops: float
    fp8_tflops: float | None
    memory_gb: float
    #: Substrings of ``torch.cuda.get_device_name()``; the longest match wins.
    matches: tuple[str, ...]


# Datasheet figures, dense. Sources: NVIDIA H100 Tensor Core GPU datasheet (SXM5: BF16 1,979
# and FP8 3,958 TFLOPS "with sparsity", halved here; PCIe 1,513/3,026; NVL 1,671/3,341, 94 GB);
# NVIDIA H200 Tensor Core GPU datasheet (SXM: the H100 SXM's figures, 141 GB); NVIDIA A100
# datasheet (BF16 312 dense, no FP8, 80 GB); NVIDIA L40S datasheet (BF16 362.05 and FP8 733
# dense, 48 GB); NVIDIA Ada Lovelace architecture whitepaper, appendix table for the RTX 4090
# (BF16 with FP32 accumulate 165.2, FP8 with FP32 accumulate 330.3, dense, 24 GB); NVIDIA RTX
# Blackwell GPU architecture whitepaper for the RTX 5090 (BF16 with FP32 accumulate 209.5, FP8
# with FP32 accumulate 419, dense, 32 GB).
GPUS: dict[str, Gpu] = {gpu.key: gpu for gpu in (
    Gpu("h100", "NVIDIA H100 SXM", 989.4, 1978.9, 80, ("H100", "H800")),
    Gpu("h100-pcie", "NVIDIA H100 PCIe", 756.5, 1513.0, 80, ("H100 PCIe",)),
    Gpu("h100-nvl", "NVIDIA H100 NVL", 835.5, 1670.5, 94, ("H100 NVL",)),
    Gpu("h200", "NVIDIA H200 SXM", 989.4, 1978.9, 141, ("H200", "GH200")),
    Gpu("a100", "NVIDIA A100 80GB", 312.0, None, 80, ("A100", "A800")),
    Gpu("l40s", "NVIDIA L40S", 362.05, 733.0, 48, ("L40S",)),
    Gpu("rtx4090", "NVIDIA GeForce RTX 4090", 165.2, 330.3, 24, ("RTX 4090",)),
    Gpu("rtx5090", "NVIDIA GeForce RTX 5090", 209.5, 419.0, 32, ("RTX 5090",)),
)}


def gpu_for_name(device_name: str) -> Gpu | None:
    """The table's GPU for a CUDA device name (``torch.cuda.get_device_name``) or a table key."""
    key = device_name.strip().lower()
    if key in GPUS:
        return GPUS[key]
    best: tuple[int, Gpu] | None = None
    for gpu in GPUS.values():
        for match in gpu.matches:
            if match.lower() in key and (best is None or len(match) > best[0]):
                best = (len(match), gpu)
    return best[1] if best else None


def gpu_names() -> str:
    return ", ".join(GPUS)


def local_gpu_name(*, use_torch: bool = False) -> str | None:
    """The first CUDA GPU's name: from torch when it is imported (or ``use_torch``), else from
    ``nvidia-smi`` (the daemon does not import torch for this); None without one."""
    torch = importlib.import_module("torch") if use_torch else sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return str(torch.cuda.get_device_name(0))
        except Exception:  # a broken driver is "no GPU" here; doctor reports it
            logger.debug("torch.cuda failed", exc_info=True)
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return names[0] if names else None


# --------------------------------------------------------------------------- efficiency

#: Share of the dense peak assumed until our GPU benchmark has measured one: large bf16 GEMMs
#: reach 60-70 % on Hopper, attention and the DiT's elementwise work pull a forward lower.
ASSUMED_EFFICIENCY = 0.45
#: The VAE's 3-D convolutions at video sizes run far from the tensor-core peak.
ASSUMED_VAE_EFFICIENCY = 0.25
#: Context parallelism (Ulysses) over N GPUs: the share of the ideal N-fold DiT speed-up.
ASSUMED_SCALING_EFFICIENCY = 0.8
#: Where ``benchmarks/gpu_engine.py`` writes what it measured.
EFFICIENCY_FILE = Path(__file__).resolve().parent.parent / "benchmarks/results/gpu_efficiency.json"


@dataclass(frozen=True)
class Efficiency:
    dit: float
    vae: float
    assumed: bool
    source: str


def load_efficiency(gpu: Gpu, path: Path | None = None) -> Efficiency:
    """The efficiency measured on this GPU, else on another one (said so), else assumed."""
    path = EFFICIENCY_FILE if path is None else path
    try:
        measured = json.loads(path.read_text()).get("by_gpu", {})
    except (OSError, ValueError, AttributeError):
        measured = {}
    entry = measured.get(gpu.key)
    if entry is None and measured:
        other = sorted(measured)[0]
        entry = {**measured[other], "device": f"{measured[other].get('device', other)}, "
                 f"not {gpu.key}"}
    if isinstance(entry, dict) and isinstance(entry.get("dit_efficiency"), (int, float)):
        vae = entry.get("vae_efficiency")
        return Efficiency(
            dit=float(entry["dit_efficiency"]),
            vae=float(vae) if isinstance(vae, (int, float)) and vae > 0
            else ASSUMED_VAE_EFFICIENCY,
            assumed=False, source=f"measured on {entry.get('device', gpu.key)} ({path.name})")
    return Efficiency(ASSUMED_EFFICIENCY, ASSUMED_VAE_EFFICIENCY, True,
                      f"ASSUMED {ASSUMED_EFFICIENCY:.0%} of peak (DiT), "
                      f"{ASSUMED_VAE_EFFICIENCY:.0%} (VAE): no GPU measurement yet")


# --------------------------------------------------------------------------- FLOPs


@dataclass(frozen=True)
class Work:
    """FLOPs of one batch's parts at one shape."""

    dit_flops: int  # one denoising forward (the conditional one)
    dit_linear_flops: int  # of which the linear layers (faster with fp8)
    vae_flops: int  # two encodes of L frames and one decode
    source: str  # "FlopCounterMode" or "analytic"
    #: The unconditional CFG forward where it differs from the conditional one (Wan-Animate-2
    #: skips a block there); None: the same.
    uncond_flops: int | None = None
    uncond_linear_flops: int | None = None
    #: Transformer work once per batch besides the steps (Wan-Animate-2's reference pass).
    batch_flops: int = 0
    batch_linear_flops: int = 0

    def dit_per_batch(self, steps: int, cfg: bool) -> tuple[int, int]:
        """All of a batch's transformer FLOPs and those of its linear layers."""
        total = steps * self.dit_flops + self.batch_flops
        linear = steps * self.dit_linear_flops + self.batch_linear_flops
        if cfg:
            total += steps * (self.dit_flops if self.uncond_flops is None else self.uncond_flops)
            linear += steps * (self.dit_linear_flops if self.uncond_linear_flops is None
                               else self.uncond_linear_flops)
        return total, linear


def analytic_breakdown(config: Mapping[str, Any], shape: Shape, text_tokens: int = TEXT_TOKENS,
                       image_tokens: int = IMAGE_TOKENS, *, scale_t: int = VAE_SCALE_TEMPORAL,
                       scale_s: int = VAE_SCALE_SPATIAL) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one transformer forward, ``total`` and its ``attention``
    (score and value products): the blocks' projections, attention and FFN, the face
    adapters, patch/pose embeddings, output projection and the text/image/time embedders.
    Leaves out the motion encoder's convolutions on the face crops, norms, RoPE and
    elementwise work."""
    pt, ph, pw = config["patch_size"]
    d = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    ffn, layers = int(config["ffn_dim"]), int(config["num_layers"])
    frames = shape.latent_frames(scale_t) + 1  # + the reference latent frame
    per_frame = (shape.height // scale_s // ph) * (shape.width // scale_s // pw)
    n = frames // pt * per_frame
    lt, li = text_tokens, image_tokens
    added = config.get("added_kv_proj_dim")

    self_scores = 4 * n * n * d
    cross_scores = 4 * n * (lt + li) * d
    self_attn = 8 * n * d * d + self_scores
    if added:
        cross = 4 * n * d * d + 4 * lt * d * d + 4 * li * int(added) * d + cross_scores
    else:  # image tokens join the text context
        cross = 4 * n * d * d + 4 * (lt + li) * d * d + cross_scores
    block = self_attn + cross + 4 * n * d * ffn

    adapters = layers // int(config["inject_face_latents_blocks"])
    motion_frames = math.ceil(shape.segment / 4) + 1  # face encoder: 2 stride-2 convs + pad
    motion_tokens = motion_frames * (int(config["face_encoder_num_heads"]) + 1)
    per_motion_frame = motion_tokens // motion_frames  # each frame's queries see its tokens
    adapter_scores = 4 * n * per_motion_frame * d
    adapter = 4 * n * d * d + 4 * motion_tokens * d * d + adapter_scores

    patch = pt * ph * pw
    embed = (2 * n * int(config["in_channels"]) * patch * d
             + 2 * (n - per_frame) * int(config["latent_channels"]) * patch * d
             + 2 * n * d * int(config["out_channels"]) * patch
             + 2 * lt * (int(config["text_dim"]) * d + d * d)
             + 2 * li * (int(config["image_dim"]) ** 2 + int(config["image_dim"]) * d)
             + 2 * (int(config["freq_dim"]) * d + d * d + 6 * d * d))
    return {"total": int(layers * block + adapters * adapter + embed),
            "attention": int(layers * (self_scores + cross_scores) + adapters * adapter_scores)}


def analytic_flops(config: Mapping[str, Any], shape: Shape, text_tokens: int = TEXT_TOKENS,
                   image_tokens: int = IMAGE_TOKENS, *, scale_t: int = VAE_SCALE_TEMPORAL,
                   scale_s: int = VAE_SCALE_SPATIAL) -> int:
    """Total FLOPs of one transformer forward (see :func:`analytic_breakdown`)."""
    return analytic_breakdown(config, shape, text_tokens, image_tokens, scale_t=scale_t,
                              scale_s=scale_s)["total"]


# The VAE's FLOPs per output pixel and frame, counted once with FlopCounterMode at 848x480
# (encode of L frames, decode of L frames from their latents): the analytic path scales them
# by pixels x frames. They are within 1 % at 1280x720 L=17.
VAE_ENCODE_FLOPS_PER_PIXEL_FRAME = 5.24e6
VAE_DECODE_FLOPS_PER_PIXEL_FRAME = 8.75e6


def analytic_work(shape: Shape, config: Mapping[str, Any] = ANIMATE_14B_TRANSFORMER) -> Work:
    flops = analytic_breakdown(config, shape)
    pixels = shape.width * shape.height * shape.segment
    vae = pixels * (2 * VAE_ENCODE_FLOPS_PER_PIXEL_FRAME + VAE_DECODE_FLOPS_PER_PIXEL_FRAME)
    return Work(flops["total"], flops["total"] - flops["attention"], int(vae), "analytic")


def _animate_2_forward(config: Mapping[str, Any], tokens: int, cached_pairs: int, blocks: int,
                       image_tokens: int) -> tuple[int, int]:
    """(total, attention) FLOPs of one Wan-Animate-2 forward over ``tokens`` tokens whose
    self-attention also scores ``cached_pairs`` (query, cached reference key) pairs."""
    pt, ph, pw = config["patch_size"]
    d, ffn = int(config["dim"]), int(config["ffn_dim"])
    n, lt = tokens, int(config["text_len"])  # the text is padded to text_len
    li = image_tokens if config.get("use_img_emb", True) else 0
    self_scores = 4 * d * (n * n + cached_pairs)
    cross_scores = 4 * n * (lt + li) * d
    block = (8 * n * d * d + self_scores
             + 4 * n * d * d + 4 * lt * d * d + 4 * li * d * d + cross_scores  # image k/v: d -> d
             + 4 * n * d * ffn)
    patch = pt * ph * pw
    image = ANIMATE_2_IMAGE_DIM
    embed = (2 * n * int(config["in_dim"]) * patch * d
             + 2 * n * d * int(config["out_dim"]) * patch
             + 2 * lt * (int(config["text_dim"]) * d + d * d)
             + 2 * li * (image * image + image * d)
             + 2 * (int(config["freq_dim"]) * d + d * d + 6 * d * d))
    return blocks * block + embed, blocks * (self_scores + cross_scores)


def analytic_animate_2(config: Mapping[str, Any], shape: Shape,
                       image_tokens: int = IMAGE_TOKENS, *, scale_t: int = VAE_SCALE_TEMPORAL,
                       scale_s: int = VAE_SCALE_SPATIAL) -> dict[str, tuple[int, int]]:
    """(total, attention) FLOPs of Wan-Animate-2's forwards at ``shape``: ``extract`` (the
    segment's reference pass: dense self-attention over the driving segment's T latent frames
    of tokens), ``cond`` and ``uncond`` (a denoising forward over the T + 1 frames of noise,
    the first the reference image's slot, each of the other T frames also attending to its own
    driving frame's cached tokens; ``uncond`` skips a block). Counts what
    :func:`analytic_breakdown` counts (projections, attention, FFN, embeddings, head)."""
    pt, ph, pw = config["patch_size"]
    frames = shape.latent_frames(scale_t)
    per_frame = (shape.height // scale_s // ph) * (shape.width // scale_s // pw)
    layers = int(config["num_layers"])
    tokens = (frames + 1) // pt * per_frame
    cached_pairs = frames // pt * per_frame * per_frame
    skipped = 1 if layers > ANIMATE_2_UNCOND_SKIPPED_BLOCK else 0
    return {
        "extract": _animate_2_forward(config, frames // pt * per_frame, 0, layers, image_tokens),
        "cond": _animate_2_forward(config, tokens, cached_pairs, layers, image_tokens),
        "uncond": _animate_2_forward(config, tokens, cached_pairs, layers - skipped,
                                     image_tokens),
    }


def analytic_animate_2_work(shape: Shape,
                            config: Mapping[str, Any] = ANIMATE_2_14B_TRANSFORMER) -> Work:
    flops = analytic_animate_2(config, shape)
    pixels = shape.width * shape.height * shape.segment
    # Per segment the same VAE work as Animate: the driving slice and the previous segment's
    # tail (padded to L frames) encoded, the segment decoded.
    vae = pixels * (2 * VAE_ENCODE_FLOPS_PER_PIXEL_FRAME + VAE_DECODE_FLOPS_PER_PIXEL_FRAME)
    (cond, cond_att), (uncond, uncond_att), (extract, extract_att) = (
        flops["cond"], flops["uncond"], flops["extract"])
    return Work(cond, cond - cond_att, int(vae), "analytic", uncond, uncond - uncond_att,
                extract, extract - extract_att)


def dit_inputs(config: Mapping[str, Any], shape: Shape, *, device: Any, dtype: Any,
               text_tokens: int = TEXT_TOKENS, image_tokens: int = IMAGE_TOKENS,
               scale_t: int = VAE_SCALE_TEMPORAL, scale_s: int = VAE_SCALE_SPATIAL
               ) -> dict[str, Any]:
    """Random inputs of one transformer forward at ``shape`` (as the engine builds them)."""
    import torch

    frames = shape.latent_frames(scale_t)
    h, w = shape.height // scale_s, shape.width // scale_s
    lat, face = int(config["latent_channels"]), int(config["motion_encoder_size"])

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(size, device=device).to(dtype)

    return {
        "hidden_states": rand(1, int(config["in_channels"]), frames + 1, h, w),
        "timestep": torch.full((1,), 500.0, device=device),
        "encoder_hidden_states": rand(1, text_tokens, int(config["text_dim"])),
        "encoder_hidden_states_image": rand(1, image_tokens, int(config["image_dim"])),
        "pose_hidden_states": rand(1, lat, frames, h, w),
        "face_pixel_values": rand(1, 3, shape.segment, face, face),
        "return_dict": False,
    }


_LINEAR_OPS = ("aten.mm", "aten.addmm")


def counted_dit_flops(transformer: Any, shape: Shape, *, text_tokens: int = TEXT_TOKENS,
                      image_tokens: int = IMAGE_TOKENS, scale_t: int = VAE_SCALE_TEMPORAL,
                      scale_s: int = VAE_SCALE_SPATIAL) -> tuple[int, int]:
    """FLOPs of one transformer forward and of its linear layers, counted by
    ``FlopCounterMode`` (on the meta device nothing is computed). On the CPU attention runs
    through the math backend so that its matmuls are counted too."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    param = next(transformer.parameters())
    inputs = dit_inputs(transformer.config, shape, device=param.device,
                        dtype=transformer.dtype, text_tokens=text_tokens,
                        image_tokens=image_tokens, scale_t=scale_t, scale_s=scale_s)
    math_attention = (sdpa_kernel([SDPBackend.MATH])
                      if param.device.type == "cpu" else nullcontext())
    with torch.no_grad(), math_attention:
        return _count(lambda: transformer(**inputs))


def counted_vae_flops(vae: Any, shape: Shape, *, scale_t: int = VAE_SCALE_TEMPORAL,
                      scale_s: int = VAE_SCALE_SPATIAL) -> int:
    """FLOPs of one batch's VAE work: the pose and conditioning encodes of L frames and the
    decode of the segment's latents."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    param = next(vae.parameters())
    device, dtype = param.device, param.dtype
    video = torch.zeros(1, 3, shape.segment, shape.height, shape.width, device=device,
                        dtype=dtype)
    latents = torch.zeros(1, int(vae.config.z_dim), shape.latent_frames(scale_t),
                          shape.height // scale_s, shape.width // scale_s, device=device,
                          dtype=dtype)
    encode, decode = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with torch.no_grad():
        with encode:
            vae.encode(video)
        with decode:
            vae.decode(latents, return_dict=False)
    return 2 * int(encode.get_total_flops()) + int(decode.get_total_flops())


@dataclass(frozen=True)
class FrameMask:
    """Stands for Wan-Animate-2's generation block mask while counting: the same attention
    (each of ``frames + 1`` latent frames of ``per_frame`` queries attends to every generation
    token, and frame f >= 1 also to the cached reference tokens of driving frame f - 1; padded
    queries attend to nothing) computed with plain matmuls, so that ``FlopCounterMode`` counts
    the pairs the mask keeps. The model's own path is flex attention, which builds its mask
    with ``torch.compile`` and, uncompiled, scores every pair of the packed buffers, masked or
    not; the compiled kernel skips the empty 128 x 128 tiles, so what a GPU computes is these
    pairs plus the partly kept tiles' rest (a few per cent at these sizes)."""

    frames: int  # latent frames of the segment (the reference image's slot not counted)
    per_frame: int  # tokens per latent frame

    def attend(self, query: Any, key: Any, value: Any, scale: float | None = None) -> Any:
        """Attention over the packed ``[generation | reference]`` buffers, ``(B, S, H, D)`` in
        and out, as the model's processor lays them out."""
        import torch

        batch, packed, heads, dim = query.shape
        f, hw = self.frames, self.per_frame
        n = (f + 1) * hw
        scale = dim ** -0.5 if scale is None else scale
        q, k, v = (x[:, :n].transpose(1, 2) for x in (query, key, value))  # (B, H, n, D)

        def by_frame(x: Any) -> Any:  # (B, f*hw, H, D) -> (B, H, f, hw, D)
            return x.reshape(batch, f, hw, heads, dim).permute(0, 3, 1, 2, 4)

        k_ref, v_ref = (by_frame(x[:, packed:packed + f * hw]) for x in (key, value))
        q_frames = q[:, :, hw:].reshape(batch, heads, f, hw, dim)
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        ref_scores = torch.matmul(q_frames, k_ref.transpose(-1, -2)) * scale
        # The reference image's slot (frame 0) has no driving frame.
        none = ref_scores.new_full((batch, heads, 1, hw, hw), float("-inf"))
        ref_scores = torch.cat([none, ref_scores], dim=2).reshape(batch, heads, n, hw)
        weights = torch.softmax(torch.cat([scores, ref_scores], dim=-1).float(), dim=-1)
        weights = weights.to(q.dtype)
        out = torch.matmul(weights[..., :n], v)
        ref_weights = weights[..., n:].reshape(batch, heads, f + 1, hw, hw)[:, :, 1:]
        ref_out = torch.matmul(ref_weights, v_ref).reshape(batch, heads, f * hw, dim)
        out = torch.cat([out[:, :, :hw], out[:, :, hw:] + ref_out], dim=2)
        result = query.new_zeros(query.shape)
        result[:, :n] = out.transpose(1, 2)
        return result


@contextmanager
def frame_mask_attention(transformer: Any) -> Iterator[None]:
    """``transformer`` (a ``WanAnimate2Transformer3DModel``) with its generation block mask
    stood in for by :class:`FrameMask` (its ``create_mask`` and its module's
    ``dispatch_attention_fn``, put back on exit). For counting: nothing else may run a
    Wan-Animate-2 transformer in this process meanwhile."""
    module: Any = importlib.import_module(type(transformer).__module__)
    dispatch = module.dispatch_attention_fn
    masks = transformer.block_masks

    def attention(query: Any, key: Any, value: Any, attn_mask: Any = None,
                  **kwargs: Any) -> Any:
        if isinstance(attn_mask, FrameMask):
            return attn_mask.attend(query, key, value, kwargs.get("scale"))
        return dispatch(query, key, value, attn_mask=attn_mask, **kwargs)

    def create_mask(frames: int, per_frame: int, device: Any) -> FrameMask:
        # The model's origin_latent_frames is the segment's latent frames, the slot aside.
        return FrameMask(frames, per_frame)

    transformer.block_masks = {}
    transformer.create_mask = create_mask
    module.dispatch_attention_fn = attention
    try:
        yield
    finally:
        module.dispatch_attention_fn = dispatch
        del transformer.create_mask
        transformer.block_masks = masks


def animate_2_inputs(config: Mapping[str, Any], shape: Shape, *, device: Any, dtype: Any,
                     image_tokens: int = IMAGE_TOKENS, scale_t: int = VAE_SCALE_TEMPORAL,
                     scale_s: int = VAE_SCALE_SPATIAL) -> tuple[dict[str, Any], dict[str, Any]]:
    """Random inputs of a segment's reference pass and of one of its denoising forwards at
    ``shape``, as the engine's streaming loop passes them (one KV cache shared by both)."""
    import torch

    transformers: Any = importlib.import_module(
        "diffusers.models.transformers.transformer_wan_animate_2")
    frames = shape.latent_frames(scale_t)
    h, w = shape.height // scale_s, shape.width // scale_s
    pt, ph, pw = config["patch_size"]
    grid = torch.tensor([[frames // pt, h // ph, w // pw]], dtype=torch.long)
    latent = int(config["out_dim"])
    condition = int(config["in_dim"]) - latent

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(size, device=device).to(dtype)

    cache = transformers.WanAnimate2KVCache(int(config["num_layers"]))
    common = {"timestep": torch.full((1,), 500.0, device=device),
              "encoder_hidden_states": [rand(int(config["text_len"]), int(config["text_dim"]))],
              "encoder_hidden_states_image": rand(1, image_tokens, ANIMATE_2_IMAGE_DIM),
              "kv_cache": cache, "return_dict": False}
    extract = {**common, "hidden_states": [rand(latent, frames, h, w)],
               "condition_latents": [rand(condition, frames, h, w)],
               "kv_cache_mode": "extract", "seq_len": int(grid.prod()),
               "offset_grid_sizes": grid}
    denoise = {**common, "hidden_states": [rand(latent, frames + 1, h, w)],
               "condition_latents": [rand(condition, frames + 1, h, w)],
               "kv_cache_mode": "cached", "seq_len": (frames + 1) // pt * (h // ph) * (w // pw),
               "reference_grid_sizes": grid, "origin_len": shape.segment,
               "origin_area": [shape.height, shape.width]}
    return extract, denoise


def counted_animate_2_flops(transformer: Any, shape: Shape, *, image_tokens: int = IMAGE_TOKENS,
                            scale_t: int = VAE_SCALE_TEMPORAL, scale_s: int = VAE_SCALE_SPATIAL,
                            uncond: bool = False) -> dict[str, tuple[int, int]]:
    """(total, linear) FLOPs of a Wan-Animate-2 segment's reference pass (``extract``) and of
    one denoising forward over its cache (``cond``; with ``uncond`` also the unconditional
    CFG branch's), counted by ``FlopCounterMode`` with the block mask as :class:`FrameMask`."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    param = next(transformer.parameters())
    extract, denoise = animate_2_inputs(
        transformer.config, shape, device=param.device, dtype=transformer.dtype,
        image_tokens=image_tokens, scale_t=scale_t, scale_s=scale_s)
    math_attention = (sdpa_kernel([SDPBackend.MATH])
                      if param.device.type == "cpu" else nullcontext())
    passes = {"extract": extract, "cond": denoise}
    if uncond:
        passes["uncond"] = {**denoise, "is_uncondtion": True}
    counts = {}
    with torch.no_grad(), math_attention, frame_mask_attention(transformer):
        for name, inputs in passes.items():  # extract first: it fills the cache
            counts[name] = _count(lambda inputs=inputs: transformer(**inputs))
    return counts


def _count(run: Any) -> tuple[int, int]:
    """(total, linear) FLOPs of ``run()`` by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    by_op = counter.get_flop_counts().get("Global", {})
    linear = sum(int(v) for op, v in by_op.items() if str(op).split(".default")[0] in _LINEAR_OPS)
    return int(counter.get_total_flops()), linear


@dataclass(frozen=True)
class Params:
    dit: int
    dit_linear: int  # the weights fp8/int8 store in one byte
    dit_fp32: int  # kept in fp32 as from_pretrained does
    vae: int


#: Counted on the meta-device models (tests check these against a build): what the daemon and
#: doctor use without building them.
ANIMATE_14B_PARAMS = Params(dit=17_274_816_884, dit_linear=17_232_691_200, dit_fp32=1_681_920,
                            vae=126_892_531)
ANIMATE_2_14B_PARAMS = Params(dit=16_394_878_784, dit_linear=16_388_587_520,
                              dit_fp32=1_689_600, vae=126_892_531)


@contextmanager
def _first_blocks(transformer: Any, count: int) -> Iterator[None]:
    """The transformer with only its first ``count`` blocks (the face adapters go by block
    index, so a multiple of their period keeps the same pattern)."""
    import torch

    blocks = transformer.blocks
    transformer.blocks = torch.nn.ModuleList(list(blocks)[:count])
    try:
        yield
    finally:
        transformer.blocks = blocks


def _extrapolate(at_a: int, at_b: int, a: int, b: int, x: int) -> int:
    """The value at ``x`` of the straight line through (a, at_a) and (b, at_b), exact for
    integer multiples of b - a."""
    return at_a + (x - a) // (b - a) * (at_b - at_a)


@dataclass
class MetaModels:
    """The real-size transformer and VAE on the meta device, and what is counted on them.

    The counter's cost is Python dispatch per operator, so identical repeats are counted
    twice and extrapolated rather than run in full: the DiT with its first one and two
    face-adapter periods of blocks (5 and 10 of 40: every block has the same shape, so the
    count is linear in blocks, exactly), the VAE at L = 5 and 9 per size (it runs causal chunks
    of one, then four frames: linear in (L - 1) / 4, exactly). tests/models/test_plan.py checks
    the extrapolation against a full count.
    """

    transformer: Any
    vae: Any
    params: Params
    #: By (width, height, L): what is carried does not change a forward.
    _work: dict[tuple[int, int, int], Work] = field(default_factory=dict)
    _vae: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)

    def work(self, shape: Shape) -> Work:
        key = (shape.width, shape.height, shape.segment)
        if key not in self._work:
            dit, linear = self._dit(shape)
            self._work[key] = Work(dit, linear, self._vae_flops(shape), "FlopCounterMode")
        return self._work[key]

    def _dit(self, shape: Shape) -> tuple[int, int]:
        config = self.transformer.config
        period, layers = int(config.inject_face_latents_blocks), int(config.num_layers)
        if layers % period or layers < 2 * period:
            return counted_dit_flops(self.transformer, shape)
        with _first_blocks(self.transformer, period):
            one = counted_dit_flops(self.transformer, shape)
        with _first_blocks(self.transformer, 2 * period):
            two = counted_dit_flops(self.transformer, shape)
        return (_extrapolate(one[0], two[0], period, 2 * period, layers),
                _extrapolate(one[1], two[1], period, 2 * period, layers))

    def share_vae(self, other: MetaModels) -> None:
        """Take ``other``'s VAE and what was counted on it (the engines share the Wan VAE)."""
        self.vae, self._vae = other.vae, other._vae

    def _vae_flops(self, shape: Shape) -> int:
        size = (shape.width, shape.height)
        if size not in self._vae:
            self._vae[size] = tuple(  # type: ignore[assignment]
                counted_vae_flops(self.vae, Shape(shape.width, shape.height, 1, segment))
                for segment in (5, 9))
        at5, at9 = self._vae[size]
        if (shape.segment - 1) % VAE_SCALE_TEMPORAL:
            return counted_vae_flops(self.vae, shape)
        return _extrapolate(at5, at9, 5, 9, shape.segment)


@dataclass
class Animate2MetaModels(MetaModels):
    """:class:`MetaModels` of Wan-Animate-2: per shape, its reference pass and a denoising
    forward, counted with one and two blocks and extrapolated to all (every block has the same
    shape); the unconditional forward is the conditional one less a block."""

    def work(self, shape: Shape) -> Work:
        key = (shape.width, shape.height, shape.segment)
        if key not in self._work:
            layers = int(self.transformer.config.num_layers)
            with _first_blocks(self.transformer, 1):
                one = counted_animate_2_flops(self.transformer, shape)
            with _first_blocks(self.transformer, 2):
                two = counted_animate_2_flops(self.transformer, shape)
            full = {name: tuple(_extrapolate(a, b, 1, 2, layers) for a, b in
                                zip(one[name], two[name], strict=True)) for name in one}
            block = [b - a for a, b in zip(one["cond"], two["cond"], strict=True)]
            skipped = 1 if layers > ANIMATE_2_UNCOND_SKIPPED_BLOCK else 0
            uncond = [total - skipped * per_block
                      for total, per_block in zip(full["cond"], block, strict=True)]
            self._work[key] = Work(full["cond"][0], full["cond"][1], self._vae_flops(shape),
                                   "FlopCounterMode", uncond[0], uncond[1], full["extract"][0],
                                   full["extract"][1])
        return self._work[key]


def build_meta_models(engine: str = "wan-animate") -> MetaModels:
    """Real-size models with no storage: built in seconds on any machine."""
    import torch

    diffusers: Any = importlib.import_module("diffusers")
    if engine not in PLANNED_ENGINES:
        raise ValueError(f"no model for engine {engine!r} in the plan")
    with _quiet_diffusers(), torch.device("meta"):
        if engine == "wan-animate-2":
            transformer = diffusers.WanAnimate2Transformer3DModel(**ANIMATE_2_14B_TRANSFORMER)
        else:
            transformer = diffusers.WanAnimateTransformer3DModel(**ANIMATE_14B_TRANSFORMER)
        vae = diffusers.AutoencoderKLWan()
        transformer = transformer.to(torch.bfloat16).eval().requires_grad_(False)
        vae = vae.to(torch.bfloat16).eval().requires_grad_(False)
    keep = set(getattr(transformer, "_keep_in_fp32_modules", None) or ())
    linear = fp32 = total = 0
    for name, module in transformer.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            total += param.numel()
            if isinstance(module, torch.nn.Linear) and pname == "weight":
                linear += param.numel()
            elif keep.intersection(f"{name}.{pname}".split(".")):
                fp32 += param.numel()
    kind = Animate2MetaModels if engine == "wan-animate-2" else MetaModels
    return kind(transformer, vae,
                Params(total, linear, fp32, sum(p.numel() for p in vae.parameters())))


def _quiet_diffusers() -> Any:
    """diffusers warns about fp32 modules on ``.to(bfloat16)``: true and irrelevant here."""
    try:
        logging_utils: Any = importlib.import_module("diffusers.utils.logging")
    except ImportError:
        return nullcontext()

    class _Quiet:
        def __enter__(self) -> None:
            self.level = logging_utils.get_verbosity()
            logging_utils.set_verbosity_error()

        def __exit__(self, *exc: object) -> None:
            logging_utils.set_verbosity(self.level)

    return _Quiet()


# --------------------------------------------------------------------------- memory

GB = 1e9
#: CUDA context, cuBLAS workspaces and the allocator's slack.
RUNTIME_BYTES = 1.5 * GB


def weight_bytes(params: Params, quantize: str) -> float:
    one_byte = quantize in ("fp8", "int8")
    dit = (params.dit_linear * (1 if one_byte else 2) + params.dit_fp32 * 4
           + (params.dit - params.dit_linear - params.dit_fp32) * 2)
    return float(dit + 2 * params.vae + 2 * CLIP_VISION_PARAMS)


def activation_bytes(shape: Shape, config: Mapping[str, Any] = ANIMATE_14B_TRANSFORMER) -> float:
    """An estimate, not a measurement (the GPU benchmark prints its measured peak beside it):
    the larger of a DiT forward's live tensors (per token: the FFN's hidden and its GELU in
    bf16, 13824 x 2 x 2 bytes, and the residual stream, norm output and q/k/v/attention output
    at hidden size, about eight d-wide bf16 tensors; attention kernels keep no n x n matrix)
    and the VAE decoder's (per causal chunk of 4 output frames at full size, about six 96-channel
    bf16 feature maps), plus the batch's frames on the GPU (four float videos of L frames)."""
    d = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    pt, ph, pw = config["patch_size"]
    per_frame = (shape.height // VAE_SCALE_SPATIAL // ph) * (shape.width // VAE_SCALE_SPATIAL // pw)
    tokens = (shape.latent_frames() + 1) // pt * per_frame
    dit = tokens * (2 * int(config["ffn_dim"]) + 8 * d) * 2
    vae, frames = _vae_and_frame_bytes(shape)
    return float(max(dit, vae) + frames)


def _vae_and_frame_bytes(shape: Shape) -> tuple[int, int]:
    pixels = shape.width * shape.height
    return 6 * 96 * 4 * pixels * 2, 4 * shape.segment * 3 * pixels * 4


def animate_2_activation_bytes(shape: Shape,
                               config: Mapping[str, Any] = ANIMATE_2_14B_TRANSFORMER) -> float:
    """:func:`activation_bytes` for Wan-Animate-2, an estimate too: the larger of the FFN's
    live tensors (as there), the self-attention's (q/k/v and residual at hidden size, RoPE's
    float64 temporaries, about two d-wide float64 tensors, and the packed ``[generation |
    reference]`` q/k/v buffers) and the VAE's, plus what lives through a whole segment: the
    reference K/V cache (every layer's keys and values of the driving segment's tokens, bf16)
    and the batch's frames."""
    d, layers = int(config["dim"]), int(config["num_layers"])
    pt, ph, pw = config["patch_size"]
    per_frame = (shape.height // VAE_SCALE_SPATIAL // ph) * (shape.width // VAE_SCALE_SPATIAL // pw)
    frames = shape.latent_frames() // pt
    tokens, ref_tokens = (frames + 1) * per_frame, frames * per_frame
    ffn = tokens * (2 * int(config["ffn_dim"]) + 8 * d) * 2
    packed, packed_ref = (math.ceil(n / 128) * 128 for n in (tokens, ref_tokens))
    attention = tokens * d * (8 * 2 + 2 * 8) + (3 * packed + 2 * packed_ref) * d * 2
    cache = layers * 2 * ref_tokens * d * 2
    vae, video = _vae_and_frame_bytes(shape)
    return float(max(ffn, attention, vae) + cache + video)


@dataclass(frozen=True)
class EngineModel:
    """What the plan knows of an engine's model without building it."""

    params: Params
    analytic_work: Callable[[Shape], Work]
    activation_bytes: Callable[[Shape], float]
    #: Whether the engine applies ``--quantize`` (else its rows run unquantized).
    quantizes: bool


ENGINE_MODELS: dict[str, EngineModel] = {
    "wan-animate": EngineModel(ANIMATE_14B_PARAMS, analytic_work, activation_bytes, True),
    # The wan-animate-2 engine loads its transformer unquantized whatever --quantize says.
    "wan-animate-2": EngineModel(ANIMATE_2_14B_PARAMS, analytic_animate_2_work,
                                 animate_2_activation_bytes, False),
}


# --------------------------------------------------------------------------- prediction

CAMERA_FPS = 30.0


@dataclass(frozen=True)
class Timing:
    dit_s: float  # all of a batch's forwards
    vae_s: float
    batch_s: float
    engine_fps: float  # new frames / batch time
    cadence: int
    fps: float  # swapped frames shown per second: camera fps / cadence (or the engine's rate)
    latency_s: float


def predict_timing(work: Work, *, steps: int, guidance_scale: float, segment: int, carry: int,
                   gpu: Gpu, efficiency: Efficiency, quantize: str = "none", gpus: int = 1,
                   scaling_efficiency: float = ASSUMED_SCALING_EFFICIENCY,
                   camera_fps: float = CAMERA_FPS) -> Timing:
    """Seconds per batch on ``gpu`` and what they mean for the screen (the module doc)."""
    total, linear = work.dit_per_batch(steps, guidance_scale > 1.0)
    bf16 = gpu.bf16_tflops * 1e12 * efficiency.dit
    linear_peak = bf16
    if quantize == "fp8" and gpu.fp8_tflops:
        linear_peak = gpu.fp8_tflops * 1e12 * efficiency.dit
    # Context parallelism splits the DiT only; the VAE runs on one GPU.
    dit_s = ((linear / linear_peak + (total - linear) / bf16)
             / (gpus * scaling_efficiency if gpus > 1 else 1))
    vae_s = work.vae_flops / (gpu.bf16_tflops * 1e12 * efficiency.vae)
    batch_s = dit_s + vae_s
    new = segment - carry
    cadence = cadence_for(batch_s / new, camera_fps)
    latency = new * cadence / camera_fps + batch_s + 1 / camera_fps
    # At the largest cadence an engine slower still skips batches: the engine's rate shows.
    shown = min(camera_fps / cadence, new / batch_s)
    return Timing(dit_s, vae_s, batch_s, new / batch_s, cadence, shown, latency)


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
    fps: float
    latency_s: float
    weights_gb: float
    activations_gb: float
    memory_gb: float
    fits: bool
    preset_size: bool  # the preset's own size and segment length


def row_for(preset: Preset, shape: Shape, work: Work, *, gpu: Gpu, efficiency: Efficiency,
            quantize: str, gpus: int, camera_fps: float, weights: float | None,
            preset_size: bool, scaling_efficiency: float = ASSUMED_SCALING_EFFICIENCY
            ) -> PlanRow:
    cfg = preset.guidance_scale > 1.0
    dit_batch = work.dit_per_batch(preset.steps, cfg)[0]
    timing = predict_timing(work, steps=preset.steps, guidance_scale=preset.guidance_scale,
                            segment=shape.segment, carry=shape.segment - shape.new_frames,
                            gpu=gpu, efficiency=efficiency, quantize=quantize, gpus=gpus,
                            scaling_efficiency=scaling_efficiency, camera_fps=camera_fps)
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
        vae_share=timing.vae_s / timing.batch_s, flops_source=work.source, gpu=gpu.key,
        gpus=gpus, efficiency=efficiency.dit, assumed_efficiency=efficiency.assumed,
        scaling_efficiency=scaling_efficiency if gpus > 1 else None,
        assumed_scaling_efficiency=gpus > 1, batch_s=timing.batch_s,
        engine_fps=timing.engine_fps, cadence=timing.cadence, fps=timing.fps,
        latency_s=timing.latency_s, weights_gb=(weights or 0.0) / GB,
        activations_gb=activations / GB, memory_gb=memory / GB,
        fits=memory / GB <= gpu.memory_gb, preset_size=preset_size)


def preset_quantize(preset: Preset) -> str:
    return str(getattr(preset, "quantize", None) or "none")


def load_presets(engine: str) -> list[Preset]:
    """The engine's presets, importing the module that registers them."""
    package = PRESET_PACKAGES.get(engine)
    if package and importlib.util.find_spec(f"{package}.presets") is not None:
        importlib.import_module(f"{package}.presets")
    return presets_for(engine)


def planned_engines() -> list[str]:
    return [engine for engine in PLANNED_ENGINES if load_presets(engine)]


def preset_shape(preset: Preset, frame_size: tuple[int, int] = (1280, 720)) -> Shape:
    width, height = generation_size(frame_size, preset.gen_short_side)
    return Shape(width, height, preset.segment_frames - preset.carry, preset.segment_frames)


DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((848, 480), (1280, 720))
#: With each engine's own presets' lengths added (wan-animate-2's live preset runs L = 5).
DEFAULT_SEGMENTS: tuple[int, ...] = (9, 17)


def engine_quantize(engine: str, preset: Preset, quantize: str, gpu: Gpu) -> str:
    """What a row of ``engine`` runs for ``--quantize quantize`` (auto: the preset's own)."""
    model = ENGINE_MODELS.get(engine)
    if model is not None and not model.quantizes:
        return "none"
    q = preset_quantize(preset) if quantize == "auto" else quantize
    return "int8" if q == "fp8" and not gpu.fp8_tflops else q  # --quantize fp8's fallback


def build_plan(gpu: Gpu, *, engines: Sequence[str] | None = None,
               sizes: Iterable[tuple[int, int]] = DEFAULT_SIZES,
               segments: Iterable[int] | None = None, quantize: str = "auto",
               gpus: int = 1, camera_fps: float = CAMERA_FPS,
               efficiency_file: Path | None = None, presets_only: bool = False,
               scaling_efficiency: float = ASSUMED_SCALING_EFFICIENCY) -> list[PlanRow]:
    """A row per engine x preset x size x segment length (``presets_only``: each preset at
    its own size and length; ``segments`` None: :data:`DEFAULT_SEGMENTS` and the engine's
    presets' lengths). Lengths too short to carry a preset's frames are left out. FLOPs are
    counted once per shape."""
    efficiency = load_efficiency(gpu, efficiency_file)
    sizes = list(sizes)
    rows: list[PlanRow] = []
    shared: MetaModels | None = None
    for engine in engines if engines is not None else planned_engines():
        presets = load_presets(engine)
        if not presets:
            continue
        models = build_meta_models(engine)
        if shared is None:
            shared = models
        else:
            models.share_vae(shared)
        lengths = sorted(set(DEFAULT_SEGMENTS) | {p.segment_frames for p in presets}) \
            if segments is None else list(segments)
        for preset in presets:
            own = preset_shape(preset)
            shapes = [own] if presets_only else []
            if not presets_only:
                for width, height in sizes:
                    for segment in lengths:
                        if segment - preset.carry >= preset.carry:
                            shapes.append(Shape(width, height, segment - preset.carry, segment))
                if own not in shapes:
                    shapes.insert(0, own)
            q = engine_quantize(engine, preset, quantize, gpu)
            for shape in shapes:
                rows.append(row_for(
                    preset, shape, models.work(shape), gpu=gpu, efficiency=efficiency,
                    quantize=q, gpus=gpus, camera_fps=camera_fps,
                    weights=weight_bytes(models.params, q), preset_size=shape == own,
                    scaling_efficiency=scaling_efficiency))
    return rows


def preset_rows(gpu: Gpu, engine: str, *, frame_size: tuple[int, int] = (1280, 720),
                quantize: str = "none", camera_fps: float = CAMERA_FPS,
                efficiency_file: Path | None = None) -> list[PlanRow]:
    """Each preset of ``engine`` at its own size for a camera of ``frame_size``, without torch
    (analytic FLOPs, the parameter counts above): what ``doctor`` shows."""
    efficiency = load_efficiency(gpu, efficiency_file)
    model = ENGINE_MODELS.get(engine)
    if model is None:
        return []
    rows = []
    for preset in load_presets(engine):
        shape = preset_shape(preset, frame_size)
        q = engine_quantize(engine, preset, quantize, gpu)
        rows.append(row_for(preset, shape, model.analytic_work(shape), gpu=gpu,
                            efficiency=efficiency, quantize=q, gpus=1, camera_fps=camera_fps,
                            weights=weight_bytes(model.params, q), preset_size=True))
    return rows


#: The engine whose model's analytic count stands for an engine's in ``doctor`` and the
#: daemon's starting cadence: each its own now.
DIT_MODEL_OF: dict[str, str] = {engine: engine for engine in ENGINE_MODELS}


def predict_settings(engine: str, *, steps: int, segment_frames: int, carry: int,
                     size: tuple[int, int], preset: str | None = None,
                     quantize: str | None = None, gpu_name: str | None = None,
                     camera_fps: float = CAMERA_FPS,
                     efficiency_file: Path | None = None) -> Timing | None:
    """The daemon's prediction for its own settings, without torch (analytic FLOPs); None when
    the engine has no model here or the GPU is unknown. Guidance is the preset's, else the
    engine default's."""
    model = ENGINE_MODELS.get(DIT_MODEL_OF.get(engine, ""))
    if model is None:
        return None
    guidance_scale = defaults.GUIDANCE_SCALE
    if preset is not None:
        guidance_scale = next((p.guidance_scale for p in load_presets(engine)
                               if p.name.value == preset), guidance_scale)
    name = gpu_name if gpu_name is not None else local_gpu_name()
    gpu = gpu_for_name(name) if name else None
    if gpu is None:
        return None
    work = model.analytic_work(Shape(size[0], size[1], segment_frames - carry, segment_frames))
    return predict_timing(work, steps=steps, guidance_scale=guidance_scale,
                          segment=segment_frames, carry=carry, gpu=gpu,
                          efficiency=load_efficiency(gpu, efficiency_file),
                          quantize=(quantize or "none") if model.quantizes else "none",
                          camera_fps=camera_fps)


# --------------------------------------------------------------------------- text


def format_rows(rows: Sequence[PlanRow]) -> list[str]:
    header = (f"  {'engine':<13} {'preset':<9} {'size':>9} {'L':>3} {'steps':>5} {'quant':>5} "
              f"{'TFLOP/fwd':>9} {'TFLOP/frame':>11} {'VAE%':>5} {'batch s':>7} {'eng fps':>7} "
              f"{'k':>2} {'fps':>5} {'latency':>7} {'mem GB':>6}")
    lines = [header, "  " + "-" * (len(header) - 2)]
    for r in rows:
        mark = "*" if r.preset_size else " "
        lines.append(
            f"  {r.engine:<13} {r.preset:<9}{mark}{r.width:>4}x{r.height:<4} {r.segment_frames:>3} "
            f"{r.steps:>3}x{r.forwards_per_step} {r.quantize:>5} {r.tflop_per_forward:>9.1f} "
            f"{r.tflop_per_new_frame:>11.1f} {100 * r.vae_share:>5.1f} {r.batch_s:>7.2f} "
            f"{r.engine_fps:>7.2f} {r.cadence:>2} {r.fps:>5.2f} {r.latency_s:>6.2f}s "
            f"{r.memory_gb:>5.1f}{'' if r.fits else '!'}")
    return lines


def render_text(rows: Sequence[PlanRow], gpu: Gpu, efficiency: Efficiency, *, gpus: int,
                camera_fps: float) -> str:
    fp8 = f"{gpu.fp8_tflops:g}" if gpu.fp8_tflops else "none"
    lines = [f"Capacity plan on {gpus} x {gpu.name} ({gpu.key}: dense bf16 {gpu.bf16_tflops:g} / "
             f"fp8 {fp8} TFLOP/s, {gpu.memory_gb:g} GB), camera {camera_fps:g} fps",
             f"  efficiency: {efficiency.source}"]
    if gpus > 1:
        lines.append(f"  {gpus} GPUs: the DiT splits over them at an ASSUMED "
                     f"{ASSUMED_SCALING_EFFICIENCY:.0%} scaling efficiency; the VAE runs on one")
    lines.append("")
    lines += format_rows(rows)
    lines += [
        "",
        "  *: the preset's own size and L; steps: steps x forwards per step (2 with CFG);",
        "  TFLOP/fwd: one denoising forward; TFLOP/frame: the DiT's per new frame (steps x",
        "  forwards x forward / (L - P); wan-animate-2 adds its reference pass per segment,",
        "  and its unconditional forwards skip a block);",
        "  VAE%: the VAE's share of the batch time; eng fps: new frames / batch s; k: the",
        "  cadence (every k-th camera frame); fps: swapped frames shown per second (camera",
        "  fps / k); latency: capture to screen = (L - P) x k / camera fps + batch s + a frame;",
        "  mem GB: weights + estimated activations + runtime, per GPU ('!': more than the GPU",
        "  has). Frame pre/post-processing is not in batch s.",
    ]
    return "\n".join(lines)


def rows_json(rows: Sequence[PlanRow]) -> str:
    return json.dumps([{k: round(v, 4) if isinstance(v, float) else v
                        for k, v in asdict(row).items()} for row in rows])


def local_gpu(*, use_torch: bool = False) -> Gpu | None:
    name = local_gpu_name(use_torch=use_torch)
    return gpu_for_name(name) if name else None


# --------------------------------------------------------------------------- command


def _say(text: str, *, error: bool = False) -> None:
    """The command's output (this is a command, not library code)."""
    print(text, file=sys.stderr if error else sys.stdout)


def _sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        width, _, height = item.strip().lower().partition("x")
        sizes.append((int(width), int(height)))
    return sizes


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def add_plan_parser(subparsers: Any) -> Any:
    plan = subparsers.add_parser(
        "plan", help="predict swapped fps, latency and memory of each preset on a GPU",
        description="Count the FLOPs of each engine, preset and generation size on the "
        "real-size models (meta device: no weights, no GPU needed) and predict what a GPU "
        "does with them.")
    plan.add_argument("--gpu", metavar="NAME",
                      help=f"one of {gpu_names()} (default: the local GPU)")
    plan.add_argument("--gpus", type=int, default=1, help="GPUs splitting the DiT (default 1)")
    plan.add_argument("--quantize", choices=("auto", "none", "fp8", "int8"), default="auto",
                      help="auto: each preset's own (default); wan-animate-2 runs unquantized")
    plan.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                      help="generation sizes WxH (default 848x480,1280x720)")
    plan.add_argument("--segments", type=_ints, default=None,
                      help="segment lengths L (default 9,17 and each engine's presets' own)")
    plan.add_argument("--camera-fps", type=float, default=CAMERA_FPS)
    plan.add_argument("--efficiency-file", type=Path, default=None,
                      help=f"measured efficiency (default {EFFICIENCY_FILE})")
    plan.add_argument("--json", action="store_true", help="one JSON list, a row per line item")
    return plan


def run_plan(args: Any) -> int:
    if args.gpus < 1:
        _say("plan: --gpus must be >= 1", error=True)
        return 2
    for segment in args.segments or ():
        if (segment - 1) % VAE_SCALE_TEMPORAL or segment < 5:
            _say(f"plan: segment lengths are 4n+1 (5, 9, 13, 17...), got {segment}",
                  error=True)
            return 2
    if args.gpu:
        gpu = gpu_for_name(args.gpu)
        if gpu is None:
            _say(f"plan: unknown GPU {args.gpu!r}; --gpu takes one of: {gpu_names()}",
                  error=True)
            return 2
    else:
        try:
            gpu = local_gpu(use_torch=True)
        except ImportError:
            _say("plan: needs torch and diffusers (pip install 'faceswap-cam[models]')",
                  error=True)
            return 2
        if gpu is None:
            name = local_gpu_name()
            seen = f"the local GPU {name!r} is not in the table" if name else "no local CUDA GPU"
            _say(f"plan: {seen}; name one with --gpu: {gpu_names()}", error=True)
            return 2
    engines = planned_engines()
    if not engines:
        _say("plan: no engine has presets registered", error=True)
        return 2
    rows = build_plan(gpu, engines=engines, sizes=args.sizes, segments=args.segments,
                      quantize=args.quantize, gpus=args.gpus, camera_fps=args.camera_fps,
                      efficiency_file=args.efficiency_file)
    if args.json:
        _say(rows_json(rows))
    else:
        _say(render_text(rows, gpu, load_efficiency(gpu, args.efficiency_file),
                          gpus=args.gpus, camera_fps=args.camera_fps))
    return 0
