"""Which diffusers attention backend a device runs: one answer for the engine and ``doctor``.

``--attention-backend auto`` takes, in order:
- FlashAttention-3 (``_flash_3``) on Hopper (compute capability 9.0, the only GPUs it is built
  for), where the ``flash_attn_3`` package is installed: exact, and the fastest there;
- SageAttention (``sage``, 2.1.1 or newer) on any NVIDIA GPU from Ampere (8.0) on: 8-bit
  attention, the kernel LightX2V's published few-step timings use;
- FlashAttention-2 (``flash``, 2.6.3 or newer) from Ampere on;
- else PyTorch's own scaled-dot-product attention (``native``), which picks its best kernel.

diffusers' Hub-kernel backends (``*_hub``) are never chosen: they download code at run time.
The package checks are diffusers' own (``attention_dispatch``), so what is chosen here is what
``set_attention_backend`` accepts.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

FLASH_3 = "_flash_3"
SAGE = "sage"
FLASH = "flash"
NATIVE = "native"

HOPPER = (9, 0)
AMPERE = (8, 0)


@dataclass(frozen=True)
class AttentionChoice:
    name: str  # a diffusers AttentionBackendName value
    reason: str  # why, for logs and doctor


#: Which optional kernels are importable and recent enough, by backend name.
Installed = Callable[[str], bool]
#: (compute capability, GPU name) of a CUDA device; None when the device is not CUDA.
GpuInfo = Callable[[str], tuple[tuple[int, int], str] | None]


def choose_attention_backend(device: str, *, installed: Installed | None = None,
                             gpu: GpuInfo | None = None) -> AttentionChoice:
    """The fastest backend ``device`` can run (``cpu``, ``mps``, ``cuda``, ``cuda:N``).
    ``installed`` and ``gpu`` default to the real checks (tests pass fakes)."""
    installed = installed or _installed
    info = (gpu or _cuda_info)(device) if device.startswith("cuda") else None
    if info is None:
        return AttentionChoice(NATIVE, f"PyTorch's native attention ({device}: no CUDA GPU)")
    capability, name = info
    described = f"{name}, compute capability {capability[0]}.{capability[1]}"
    if capability == HOPPER and installed(FLASH_3):
        return AttentionChoice(FLASH_3, f"FlashAttention-3 on {described}")
    if capability >= AMPERE and installed(SAGE):
        return AttentionChoice(SAGE, f"SageAttention on {described}")
    if capability >= AMPERE and installed(FLASH):
        return AttentionChoice(FLASH, f"FlashAttention-2 on {described}")
    missing = ("flash_attn_3 or sageattention" if capability == HOPPER
               else "sageattention" if capability >= AMPERE else "")
    hint = f"; faster with {missing} installed" if missing else ""
    return AttentionChoice(NATIVE, f"PyTorch's native attention on {described}{hint}")


def _installed(backend: str) -> bool:
    package = {FLASH_3: "flash_attn_3", SAGE: "sageattention", FLASH: "flash_attn"}
    if importlib.util.find_spec(package[backend]) is None:
        return False  # checked first: importing diffusers is slow, and pointless without it
    try:
        from diffusers.models import attention_dispatch
    except ImportError:
        return False
    flag = {FLASH_3: "_CAN_USE_FLASH_ATTN_3", SAGE: "_CAN_USE_SAGE_ATTN",
            FLASH: "_CAN_USE_FLASH_ATTN"}[backend]
    return bool(getattr(attention_dispatch, flag, False))


def _cuda_info(device: str) -> tuple[tuple[int, int], str] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return (major, minor), torch.cuda.get_device_name(index)


def attention_backend(name: str, device: str) -> str:
    """The diffusers backend for ``--attention-backend name``: ``auto`` is chosen for the device
    (diffusers itself knows no ``auto``)."""
    if name != "auto":
        return name
    choice = choose_attention_backend(device)
    logger.info("attention backend %s: %s", choice.name, choice.reason)
    return choice.name
