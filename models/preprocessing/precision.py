"""The precision the preprocessing models' float32 matrix products run at on a GPU.

The detector and ViTPose-H are float32 models. PyTorch runs float32 convolutions on TF32
tensor cores by default (``torch.backends.cudnn.allow_tf32``) but float32 matrix products in
full IEEE float32, on the GPU's CUDA cores: for ViTPose-H, 248 of its 252 GFLOP a frame, that
is about 7x under the TF32 tensor-core peak of a Hopper GPU. Wan-Animate's own
preprocessing runs both models through onnxruntime's CUDA provider, whose ``use_tf32`` option
is on by default, so TF32 is the precision the recipe was made with, not a shortcut of ours.

The switch is process-wide in PyTorch, so it is held only around the preprocessing models'
forwards and put back as it was, so the video model's own float32 layers keep PyTorch's
default. That holds because one thread runs all of an engine's torch work (the processor's
engine worker, or the engine host's engine thread), the preprocessing between generations,
never beside one. One case breaks it: an engine hosted inside the daemon that hangs inside a
preprocessing forward is abandoned, and the engine loaded after it, on a new thread, may run
while the old thread still holds the switch (its float32 products on TF32 too, until it
returns). A hang is already a failure that restarts the engine; the cost is a small numeric
difference meanwhile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def tf32_matmuls(device: Any) -> Iterator[None]:
    """Float32 matrix products on TF32 tensor cores while inside, on a CUDA ``device``;
    nothing changes elsewhere."""
    import torch

    if torch.device(device).type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    # PyTorch >= 2.9 refuses to read the legacy flag once the new one was set (and the other
    # way round), so the switch goes through whichever API this PyTorch has, and only that.
    if hasattr(matmul, "fp32_precision"):
        previous = matmul.fp32_precision
        matmul.fp32_precision = "tf32"
        try:
            yield
        finally:
            matmul.fp32_precision = previous
    else:
        was = bool(matmul.allow_tf32)
        matmul.allow_tf32 = True
        try:
            yield
        finally:
            matmul.allow_tf32 = was
