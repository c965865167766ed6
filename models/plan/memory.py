"""Memory of a run per GPU: the weights, an activation estimate per engine, the runtime."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from faceswap_cam.models.plan.animate import ANIMATE_14B_TRANSFORMER
from faceswap_cam.models.plan.animate2 import ANIMATE_2_14B_TRANSFORMER
from faceswap_cam.models.plan.work import CLIP_VISION_PARAMS, VAE_SCALE_SPATIAL, Params, Shape

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
