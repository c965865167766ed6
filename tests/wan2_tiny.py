"""A tiny, random-weight Wan-Animate-2 checkpoint built offline, for tests.

:func:`save_tiny_wan_animate_2` writes a folder in the Hub repos' layout (one subfolder per
component, ``model_index.json``) that :mod:`faceswap_cam.models.wan2.loading` loads, so the real
loading and inference code runs on CPU in seconds without any download. Every component is the
real class, shrunk: the word-level tokenizer and 1-layer UMT5 of :mod:`tests.wan_tiny`, a
1-layer CLIP vision tower (1280 wide: the transformer's image projection is fixed at 1280), a
narrow Wan VAE and a 2-block Wan-Animate-2 transformer. The base variant gets the DPM-Solver
scheduler and the distilled one the flow-matching Euler scheduler, as the released repos do.

Geometry the tests must use: ``HEIGHT`` x ``WIDTH`` frames and references (multiples of 16),
segments of ``4 * n + 1`` frames, ``PROMPT_MAX_LEN`` as ``max_sequence_length``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from tests.wan_tiny import LATENT_CHANNELS, TEXT_DIM, VOCAB_SIZE, build_tokenizer

HEIGHT = 32
WIDTH = 32
PROMPT_MAX_LEN = 16
CLIP_HIDDEN = 1280  # WanAnimate2Transformer3DModel's img_emb takes 1280 features


def _untyped(module: str) -> Any:
    return importlib.import_module(module)


def build_tiny_components(variant: str, seed: int = 0, *, dim: int = 24) -> dict[str, Any]:
    """The pipeline's from-pretrained components, tiny; the same seed gives the same weights.
    ``dim=32`` makes the transformer's layers multiples of 16, as torchao's fp8 needs of a
    layer it converts."""
    import torch

    diffusers, transformers = _untyped("diffusers"), _untyped("transformers")
    torch.manual_seed(seed)
    text_encoder = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=VOCAB_SIZE, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    torch.manual_seed(seed)
    image_encoder = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=CLIP_HIDDEN, intermediate_size=32, projection_dim=32,
        num_hidden_layers=1,  # the pipeline reads hidden_states[-2]
        num_attention_heads=2,
        image_size=224, patch_size=32))  # the pipeline resizes to 224 for CLIP
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKLWan(
        base_dim=4, z_dim=LATENT_CHANNELS, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True])
    torch.manual_seed(seed)
    transformer = diffusers.WanAnimate2Transformer3DModel(
        text_len=PROMPT_MAX_LEN, in_dim=2 * LATENT_CHANNELS + 4, dim=dim, ffn_dim=32,
        freq_dim=32, text_dim=TEXT_DIM, out_dim=LATENT_CHANNELS, num_heads=2, num_layers=2)
    if variant == "base":
        scheduler = diffusers.DPMSolverMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    else:
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0)
    return {"transformer": transformer, "vae": vae, "text_encoder": text_encoder,
            "tokenizer": build_tokenizer(), "image_encoder": image_encoder,
            "scheduler": scheduler}


def save_tiny_wan_animate_2(folder: Path, variant: str, seed: int = 0, *, dim: int = 24
                            ) -> Path:
    """Write a tiny checkpoint of ``variant`` (base | distilled) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "_class_name": ("WanAnimate2ModularPipeline" if variant == "base"
                        else "WanAnimate2DistilledModularPipeline")}
    for name, component in build_tiny_components(variant, seed, dim=dim).items():
        component.save_pretrained(str(folder / name))
        library = "diffusers" if type(component).__module__.startswith("diffusers") \
            else "transformers"
        index[name] = [library, type(component).__name__]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), "utf-8")
    return folder
