"""Layer 4: swap engines.

Everything importable here without torch: the engine protocol, the registry and the
stand-in engines. Model-backed engines import torch/diffusers lazily, inside their factories.
"""

from faceswap_cam.models.engine import (
    EngineError,
    SwapEngine,
    available_engines,
    create_engine,
    register_engine,
    resolve_engine_name,
)

__all__ = [
    "EngineError",
    "SwapEngine",
    "available_engines",
    "create_engine",
    "register_engine",
    "resolve_engine_name",
]
