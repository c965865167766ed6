"""The GPUs the plan knows (dense datasheet peaks and memory), the local GPU, and the share of
the peak our GPU benchmark measured (``EFFICIENCY_FILE``) or that is assumed until it has."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


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

    @property
    def tf32_tflops(self) -> float:
        """Dense TF32 tensor-core peak, TFLOP/s, where the preprocessing models' float32
        products run (models/preprocessing/precision.py): half the BF16 peak, as each
        datasheet below gives it."""
        return self.bf16_tflops / 2


# Datasheet figures, dense. Sources: NVIDIA H100 Tensor Core GPU datasheet (SXM5: BF16 1,979,
# FP8 3,958 and TF32 989 TFLOPS "with sparsity", halved here; PCIe 1,513/3,026/756; NVL
# 1,671/3,341/835, 94 GB); NVIDIA H200 Tensor Core GPU datasheet (SXM: the H100 SXM's figures,
# 141 GB); NVIDIA A100 datasheet (BF16 312 and TF32 156 dense, no FP8, 80 GB); NVIDIA L40S
# datasheet (BF16 362.05, FP8 733 and TF32 183 dense, 48 GB); NVIDIA Ada Lovelace architecture
# whitepaper, appendix table for the RTX 4090 (BF16 with FP32 accumulate 165.2, FP8 with FP32
# accumulate 330.3, TF32 82.6, dense, 24 GB); NVIDIA RTX Blackwell GPU architecture whitepaper
# for the RTX 5090 (BF16 with FP32 accumulate 209.5, FP8 with FP32 accumulate 419, TF32 104.8,
# dense, 32 GB).
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


def local_gpu(*, use_torch: bool = False) -> Gpu | None:
    name = local_gpu_name(use_torch=use_torch)
    return gpu_for_name(name) if name else None


#: Share of the dense peak assumed until our GPU benchmark has measured one: large bf16 GEMMs
#: reach 60-70 % on Hopper, attention and the DiT's elementwise work pull a forward lower.
ASSUMED_EFFICIENCY = 0.45
#: The VAE's 3-D convolutions at video sizes run far from the tensor-core peak.
ASSUMED_VAE_EFFICIENCY = 0.25
#: Context parallelism (Ulysses) over N GPUs: the share of the ideal N-fold DiT speed-up.
ASSUMED_SCALING_EFFICIENCY = 0.8
#: Where ``benchmarks/gpu_engine.py`` writes what it measured.
EFFICIENCY_FILE = (Path(__file__).resolve().parent.parent.parent
                   / "benchmarks/results/gpu_efficiency.json")


@dataclass(frozen=True)
class Efficiency:
    dit: float
    vae: float
    assumed: bool
    source: str


#: The engine whose measurements are the file's top-level ``by_gpu``; every other engine's are
#: under ``engines[NAME]["by_gpu"]`` in the same form.
FIRST_ENGINE = "wan-animate"


def load_efficiency(gpu: Gpu, path: Path | None = None,
                    engine: str = FIRST_ENGINE) -> Efficiency:
    """The efficiency measured for ``engine`` on this GPU, else another engine's on this GPU,
    else ``engine``'s on another GPU, else another engine's there (each said so), else
    assumed. Kernels and memory make most of it (both engines' DiTs are the same blocks), so
    the GPU matters more than the engine."""
    path = EFFICIENCY_FILE if path is None else path
    sections = _measured_sections(read_measurements(path))
    own = sections.pop(engine, {})
    ordered = [(engine, own), *sorted(sections.items())]
    candidates = [(name, gpu.key, entries[gpu.key]) for name, entries in ordered
                  if gpu.key in entries]
    candidates += [(name, key, entries[key]) for name, entries in ordered
                   for key in sorted(entries) if key != gpu.key]
    for name, key, entry in candidates:
        if not isinstance(entry, dict) or not isinstance(entry.get("dit_efficiency"),
                                                        (int, float)):
            continue
        vae = entry.get("vae_efficiency")
        device = measured_on(entry, key, gpu)
        whose = "" if name == engine else f"{name}'s, "
        return Efficiency(
            dit=float(entry["dit_efficiency"]),
            vae=float(vae) if isinstance(vae, (int, float)) and vae > 0
            else ASSUMED_VAE_EFFICIENCY,
            assumed=False, source=f"{whose}measured on {device} ({path.name})")
    return Efficiency(ASSUMED_EFFICIENCY, ASSUMED_VAE_EFFICIENCY, True,
                      f"ASSUMED {ASSUMED_EFFICIENCY:.0%} of peak (DiT), "
                      f"{ASSUMED_VAE_EFFICIENCY:.0%} (VAE): no GPU measurement yet")


def measured_on(entry: dict[str, Any], key: str, gpu: Gpu) -> str:
    """The device an efficiency-file entry (under GPU ``key``) was measured on, saying so when
    it stands in for ``gpu``."""
    return str(entry.get("device", key)) + ("" if key == gpu.key else f", not {gpu.key}")


@dataclass(frozen=True)
class Scaling:
    """The share of the ideal N-fold DiT speed-up that N GPUs give (context parallelism)."""

    efficiency: float
    assumed: bool
    source: str


def load_scaling(gpu: Gpu, gpus: int, path: Path | None = None) -> Scaling:
    """The scaling efficiency ``benchmarks/gpu_engine.py --gpus N`` measured for ``gpus`` of
    this GPU, else assumed: it hangs on the count and the links between the GPUs, so nothing
    else stands in for it."""
    path = EFFICIENCY_FILE if path is None else path
    scaling = read_measurements(path).get("scaling")
    by_count = scaling.get(gpu.key) if isinstance(scaling, dict) else None
    entry = by_count.get(str(gpus)) if isinstance(by_count, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("efficiency"), (int, float)) \
            and entry["efficiency"] > 0:
        return Scaling(float(entry["efficiency"]), False,
                       f"{entry['efficiency']:.0%}, measured on {entry.get('device', gpu.key)} "
                       f"x {gpus} ({path.name})")
    return Scaling(ASSUMED_SCALING_EFFICIENCY, True,
                   f"ASSUMED {ASSUMED_SCALING_EFFICIENCY:.0%}: not measured on {gpus} x "
                   f"{gpu.key} yet")


def save_scaling(path: Path, gpu: Gpu, gpus: int, efficiency: float, *, device: str,
                 measured: str) -> None:
    """Merge one measured scaling efficiency into the efficiency file, keeping the rest."""
    document = read_measurements(path)
    scaling = document.setdefault("scaling", {})
    scaling.setdefault(gpu.key, {})[str(gpus)] = {
        "efficiency": round(efficiency, 4), "device": device, "measured": measured}
    write_measurements(path, document)


def save_efficiency(path: Path, gpu: Gpu, engine: str, entry: dict[str, Any]) -> None:
    """Merge one engine's measured efficiency on ``gpu`` into the efficiency file, where
    :func:`load_efficiency` reads it, keeping the rest."""
    document = read_measurements(path)
    if engine == FIRST_ENGINE:
        by_gpu = document.setdefault("by_gpu", {})
    else:
        by_gpu = document.setdefault("engines", {}).setdefault(engine, {}).setdefault(
            "by_gpu", {})
    by_gpu[gpu.key] = entry
    write_measurements(path, document)


def read_measurements(path: Path) -> dict[str, Any]:
    """The efficiency file's document; empty when it is missing or not ours."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def write_measurements(path: Path, document: dict[str, Any]) -> None:
    """Replace the file whole: a benchmark stopped mid-write (a device call's time limit) must
    not leave a truncated file, which reads as empty and the next writer would then overwrite
    with its own section alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(partial, path)


def measured_entry(path: Path, gpu: Gpu, engine: str = FIRST_ENGINE) -> dict[str, Any]:
    """What the efficiency file holds for ``engine`` on ``gpu`` (empty when nothing)."""
    entry = _measured_sections(read_measurements(path)).get(engine, {}).get(gpu.key)
    return entry if isinstance(entry, dict) else {}


def _measured_sections(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each engine's ``by_gpu`` entries in the efficiency file."""
    sections: dict[str, dict[str, Any]] = {}
    first = document.get("by_gpu")
    if isinstance(first, dict):
        sections[FIRST_ENGINE] = first
    engines = document.get("engines")
    for name, section in (engines.items() if isinstance(engines, dict) else ()):
        by_gpu = section.get("by_gpu") if isinstance(section, dict) else None
        if isinstance(by_gpu, dict) and name != FIRST_ENGINE:
            sections[str(name)] = by_gpu
    return sections
