"""Loading Wan-Animate-2 from a local folder into diffusers' modular pipeline.

The Hub repos' ``modular_model_index.json`` points each component at a Hub location (some at a
pinned revision), so ``ModularPipeline.from_pretrained`` would go to the network. Here the
variant's blocks build the pipeline and every component is loaded from the folder's own
subfolders (``local_files_only``): a download by ``faceswap-cam models download`` or any folder
in the same layout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from faceswap_cam.models import weights
from faceswap_cam.models.attention import attention_backend
from faceswap_cam.models.wan.loading import LoadOptions, pick_device, pick_dtype, resolve_model_path
from faceswap_cam.models.wan2.variants import WEIGHTS, Wan2Variant

logger = logging.getLogger(__name__)


def _blocks(variant: Wan2Variant) -> Any:
    import diffusers

    lib: Any = diffusers
    blocks = lib.WanAnimate2Blocks if variant is Wan2Variant.BASE \
        else lib.WanAnimate2DistilledBlocks
    return blocks()


def _scheduler(folder: Path, shift: float | None) -> Any:
    import diffusers

    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text("utf-8"))
    scheduler_class: Any = getattr(diffusers, str(config["_class_name"]))
    scheduler = scheduler_class.from_pretrained(str(folder), subfolder="scheduler",
                                                local_files_only=True)
    if shift is not None:
        # UniPC and DPM-Solver call it flow_shift, the flow-matching Euler scheduler shift.
        key = "flow_shift" if "flow_shift" in scheduler.config else "shift"
        scheduler = scheduler_class.from_config(scheduler.config, **{key: shift})
    return scheduler


def transformer_quantization(kind: str, device: str) -> Any:
    """diffusers' torchao config for the transformer's ``--quantize kind`` (the 14B DiT holds
    nearly every weight and FLOP; the VAE and encoders stay as they are), checked for
    ``device`` first: a :class:`~faceswap_cam.models.quantize.QuantizeError` says why fp8
    cannot run here before minutes of loading. None for ``none``."""
    if kind == "none":
        return None
    from faceswap_cam.models.quantize import transformer_config

    return transformer_config(kind, device)


def load_components(folder: Path, dtype: Any, *, shift: float | None = None,
                    quantization: Any = None) -> dict[str, Any]:
    """Every from-pretrained component of the pipeline, from ``folder``'s subfolders;
    ``quantization`` (:func:`transformer_quantization`) applies to the transformer."""
    import diffusers
    import transformers

    lib: Any = diffusers
    tlib: Any = transformers
    local = {"local_files_only": True}
    quantized = {} if quantization is None else {"quantization_config": quantization}
    components = {
        "transformer": lib.WanAnimate2Transformer3DModel.from_pretrained(
            str(folder / "transformer"), torch_dtype=dtype, **local, **quantized),
        "vae": lib.AutoencoderKLWan.from_pretrained(str(folder / "vae"), torch_dtype=dtype,
                                                    **local),
        "text_encoder": tlib.UMT5EncoderModel.from_pretrained(
            str(folder / "text_encoder"), dtype=dtype, **local),
        "tokenizer": tlib.AutoTokenizer.from_pretrained(str(folder / "tokenizer"), **local),
        "image_encoder": tlib.CLIPVisionModel.from_pretrained(
            str(folder / "image_encoder"), dtype=dtype, **local),
        "scheduler": _scheduler(folder, shift),
    }
    if (folder / "guider").is_dir():
        components["guider"] = lib.ClassifierFreeGuidance.from_pretrained(
            str(folder), subfolder="guider", **local)
    return components


def load_pipeline(model: str, variant: Wan2Variant, options: LoadOptions) -> Any:
    """A ``WanAnimate2(Distilled)ModularPipeline`` from a local folder, placed and quantized as
    ``options`` say. LoRAs and offload are refused (a ``ValueError`` saying what to use)."""
    # Refused before minutes of loading, with what to do instead.
    if options.loras:
        raise ValueError("wan-animate-2 does not support --lora yet (none is published for "
                         "Wan-Animate-2): drop the flag or use --engine wan-animate")
    if options.offload != "none":
        raise ValueError(f"wan-animate-2 does not support --offload {options.offload} yet: use "
                         "--offload none (--quantize int8 halves the transformer's weights) "
                         "or --engine wan-animate")
    name = WEIGHTS[variant]
    path = resolve_model_path(model, name)
    problems = weights.check_structure(name, path)
    if problems:
        raise weights.WeightsError(
            f"Wan-Animate-2 weights in {path} are incomplete:\n  "
            + "\n  ".join(f"{problem.path} {problem.detail}" for problem in problems)
            + f"\nFix: {weights.fix_command(name)}")
    import torch

    device = pick_device(options.device)
    dtype = pick_dtype(options.dtype, device)
    quantization = transformer_quantization(options.quantize, device)
    logger.info("loading Wan-Animate-2 (%s) from %s (%s, %s, quantize %s)", variant, path,
                device, dtype, options.quantize)
    pipe = _blocks(variant).init_pipeline()
    pipe.update_components(**load_components(path, dtype, shift=options.shift,
                                             quantization=quantization))
    if options.vae_fp32:
        pipe.vae.to(torch.float32)
    if options.attention_backend:
        # The generation self-attention always runs on flex; this sets every other one.
        pipe.transformer.set_attention_backend(attention_backend(options.attention_backend,
                                                                 device))
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.to(device)
    if options.compile:
        # Flex attention is only memory-efficient compiled: the blocks compile once.
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
    return pipe
