"""Wan2.2-Animate-14B (the ``wan-animate`` engine): its transformer's config and parameters, the
analytic FLOPs of a forward, and the forward counted by ``FlopCounterMode``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from faceswap_cam.models.plan.counter import count_flops, counting
from faceswap_cam.models.plan.work import (
    IMAGE_TOKENS,
    TEXT_TOKENS,
    VAE_SCALE_SPATIAL,
    VAE_SCALE_TEMPORAL,
    Params,
    Shape,
    Work,
)

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
#: Counted on the meta-device models (tests check these against a build): what the daemon and
#: doctor use without building them.
ANIMATE_14B_PARAMS = Params(dit=17_274_816_884, dit_linear=17_232_691_200, dit_fp32=1_681_920,
                            vae=126_892_531)


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


def analytic_work(shape: Shape, config: Mapping[str, Any] = ANIMATE_14B_TRANSFORMER) -> Work:
    flops = analytic_breakdown(config, shape)
    return Work(flops["total"], flops["total"] - flops["attention"], shape.analytic_vae_flops(),
                "analytic")


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


def counted_dit_flops(transformer: Any, shape: Shape, *, text_tokens: int = TEXT_TOKENS,
                      image_tokens: int = IMAGE_TOKENS, scale_t: int = VAE_SCALE_TEMPORAL,
                      scale_s: int = VAE_SCALE_SPATIAL) -> tuple[int, int]:
    """FLOPs of one transformer forward and of its linear layers, counted by
    ``FlopCounterMode`` (on the meta device nothing is computed). On the CPU attention runs
    through the math backend so that its matmuls are counted too."""
    param = next(transformer.parameters())
    inputs = dit_inputs(transformer.config, shape, device=param.device,
                        dtype=transformer.dtype, text_tokens=text_tokens,
                        image_tokens=image_tokens, scale_t=scale_t, scale_s=scale_s)
    with counting(param.device):
        return count_flops(lambda: transformer(**inputs))
