"""Loading Wan-Animate's diffusers components from a local folder, with the device options.

Nothing is downloaded here (``local_files_only``): weights come from ``faceswap-cam models
download``. A folder with missing or partial files is named file by file before diffusers
ever sees it, so the user gets the fix instead of a stack trace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceswap_cam.models import weights
from faceswap_cam.models.attention import attention_backend

logger = logging.getLogger(__name__)


@dataclass
class LoadOptions:
    device: str = "auto"  # auto | cuda | cuda:N | mps | cpu
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32
    vae_fp32: bool = False
    offload: str = "none"  # none | model | sequential
    vae_tiling: bool = False
    #: A diffusers backend name, "auto" (chosen for the device) or None (diffusers' default).
    attention_backend: str | None = None
    compile: bool = False
    #: (file, or the registered name of a downloaded LoRA, and its scale)
    loras: list[tuple[str, float]] = field(default_factory=list)
    shift: float | None = None
    quantize: str = "none"  # none | fp8 | int8: the transformer's weights


def parse_lora(spec: str) -> tuple[str, float]:
    """``PATH`` or ``PATH:SCALE`` (the scale defaults to 1)."""
    path, sep, scale = spec.rpartition(":")
    if sep and path and not Path(spec).exists():
        try:
            return path, float(scale)
        except ValueError:
            pass
    return spec, 1.0


def resolve_lora(spec: str) -> str:
    """A LoRA file: a path, or the registered name of one (``lightx2v-lora``) downloaded by
    ``faceswap-cam models download`` (nothing is fetched here)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return str(path)
    try:
        model = weights.get_model(spec)
    except weights.UnknownModelError:
        raise weights.WeightsError(f"LoRA file not found: {spec}") from None
    if model.layout != "files" or len(model.allow_patterns) != 1:
        raise weights.WeightsError(f"{spec} is a model, not a LoRA file")
    local = weights.model_dir(spec) / model.allow_patterns[0]
    if not local.is_file():
        raise weights.WeightsError(f"{model.description or spec} is not downloaded ({local} is "
                                   f"missing). Get it with: {weights.fix_command(spec)}")
    return str(local)


def resolve_model_path(model: str | Path, name: str = "wan-animate") -> Path:
    """A local folder for ``model``: a path, or the repo id of registered model ``name``
    downloaded by ``faceswap-cam models download`` (nothing is fetched here)."""
    path = Path(model).expanduser()
    if path.exists():
        return path
    spec = weights.get_model(name)
    if str(model) == spec.repo_id:
        local = weights.model_dir(name)
        if local.exists():
            return local
    raise weights.WeightsError(f"{spec.description or name} not found: {str(model)!r} is "
                               "neither a folder nor a downloaded model. Get it with: "
                               f"{weights.fix_command(name)}")


def check_folder(path: Path, name: str = "wan-animate") -> list[str]:
    """Every problem that would stop ``from_pretrained`` on this folder of registered model
    ``name`` (a diffusers layout), as readable lines: the weights' own layout check, so a
    folder a setting names and a download are held to one rule."""
    return [_describe(path, problem) for problem in weights.check_structure(name, path)]


def _describe(folder: Path, problem: weights.Problem) -> str:
    target = folder / problem.path
    # A trailing "/" says the path is a folder ("vae/ is missing").
    shown = f"{target}/" if problem.path.endswith("/") or target.is_dir() else str(target)
    if problem.kind is weights.ProblemKind.MISSING:
        return f"{shown} is missing"
    return f"{shown} {problem.detail}"


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("--device cuda asked for, but torch sees no CUDA GPU")
        if device == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError("--device mps asked for, but this machine has no MPS")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if dtype not in table:
        raise ValueError(f"dtype must be auto, bf16, fp16 or fp32, got {dtype!r}")
    return table[dtype]


def load_pipeline(model: str, options: LoadOptions) -> Any:
    """``WanAnimatePipeline`` from a local folder, placed and configured as ``options`` say."""
    path = resolve_model_path(model)
    problems = check_folder(path)
    if problems:
        raise weights.WeightsError(f"Wan-Animate weights in {path} are incomplete:\n  "
                                   + "\n  ".join(problems)
                                   + f"\nFix: {weights.fix_command('wan-animate')}")
    # Missing LoRA files are named with their fix before minutes of loading, not after.
    loras = [(resolve_lora(lora), scale) for lora, scale in options.loras]
    import diffusers
    import torch

    pipeline_class: Any = diffusers.WanAnimatePipeline
    scheduler_class: Any = diffusers.UniPCMultistepScheduler

    device = pick_device(options.device)
    dtype = pick_dtype(options.dtype, device)
    extra: dict[str, Any] = {}
    if options.quantize != "none":
        extra["quantization_config"] = quantization_config(options.quantize, device)
    logger.info("loading Wan-Animate from %s (%s, %s, quantize %s)", path, device, dtype,
                options.quantize)
    pipe = pipeline_class.from_pretrained(str(path), dtype=dtype, local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    if options.vae_fp32:
        pipe.vae.to(torch.float32)
    if options.shift is not None:
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config,
                                                     flow_shift=options.shift)
    if loras:
        names = []
        for i, (lora, scale) in enumerate(loras):
            name = f"lora{i}"
            pipe.load_lora_weights(lora, adapter_name=name)
            names.append((name, scale))
        pipe.set_adapters([n for n, _ in names], adapter_weights=[s for _, s in names])
    if options.attention_backend:
        pipe.transformer.set_attention_backend(
            attention_backend(options.attention_backend, device))
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif options.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif options.offload == "none":
        pipe.to(device)
    else:
        raise ValueError(f"offload must be none, model or sequential, got {options.offload!r}")
    if options.compile:
        # The 40 identical blocks compile once and are reused: far quicker than the whole DiT.
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
    return pipe


def quantization_config(kind: str, device: str) -> Any:
    """diffusers' torchao config for the transformer (the 14B DiT holds nearly every weight and
    FLOP; the VAE and encoders stay as they are). fp8 only where the GPU computes in fp8."""
    import importlib

    from faceswap_cam.models.quantize import transformer_config

    diffusers: Any = importlib.import_module("diffusers")  # untyped constructors
    return diffusers.PipelineQuantizationConfig(
        quant_mapping={"transformer": transformer_config(kind, device)})
