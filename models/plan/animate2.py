"""Wan-Animate-2-14B (the ``wan-animate-2`` engine, base and distilled: one architecture): its
transformer's config and parameters, the analytic FLOPs of a segment's reference pass and
denoising forwards, and the same counted by ``FlopCounterMode`` with :class:`FrameMask`
standing in for the generation block mask."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from faceswap_cam.models.plan.counter import count_flops, counting
from faceswap_cam.models.plan.work import (
    IMAGE_TOKENS,
    VAE_SCALE_SPATIAL,
    VAE_SCALE_TEMPORAL,
    Params,
    Shape,
    Work,
)

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
#: Counted on the meta-device models (tests check these against a build): what the daemon and
#: doctor use without building them.
ANIMATE_2_14B_PARAMS = Params(dit=16_394_878_784, dit_linear=16_388_587_520,
                              dit_fp32=1_689_600, vae=126_892_531)


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
                            config: Mapping[str, Any] = ANIMATE_2_14B_TRANSFORMER,
                            image_tokens: int = IMAGE_TOKENS) -> Work:
    flops = analytic_animate_2(config, shape, image_tokens)
    (cond, cond_att), (uncond, uncond_att), (extract, extract_att) = (
        flops["cond"], flops["uncond"], flops["extract"])
    return Work(cond, cond - cond_att, shape.analytic_vae_flops(), "analytic", uncond,
                uncond - uncond_att, extract, extract - extract_att)


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
    param = next(transformer.parameters())
    extract, denoise = animate_2_inputs(
        transformer.config, shape, device=param.device, dtype=transformer.dtype,
        image_tokens=image_tokens, scale_t=scale_t, scale_s=scale_s)
    passes = {"extract": extract, "cond": denoise}
    if uncond:
        passes["uncond"] = {**denoise, "is_uncondtion": True}
    counts = {}
    with counting(param.device), frame_mask_attention(transformer):
        for name, inputs in passes.items():  # extract first: it fills the cache
            counts[name] = count_flops(lambda inputs=inputs: transformer(**inputs))
    return counts
