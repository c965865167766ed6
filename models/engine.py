"""The swap-engine contract and the registry that creates engines by name.

An engine turns a batch of BGR frames into the same number of swapped frames. Generative
engines work on segments and keep temporal state between calls, so the processor feeds them
``first_batch`` frames first and ``next_batch`` frames on every later call, contiguous in the
engine's own cadence; ``reset()`` forgets that state whenever continuity breaks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """An engine cannot be created or cannot run; the message says how to fix it."""


@runtime_checkable
class SwapEngine(Protocol):
    first_batch: int
    next_batch: int

    def set_reference(self, image: np.ndarray) -> None:
        """Validate and encode a reference image (BGR) once; applies from the next batch."""

    def process(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Swap a batch; returns the same number of frames, in order, same size, BGR uint8.

        An engine that has nothing to swap (nobody in view) returns the input frame objects
        themselves: the processor then shows them as passthrough and restarts the segment
        chain (the engine resets its own temporal state)."""

    def reset(self) -> None:
        """Forget temporal state (continuity broke: gap, reference change, restart)."""

    def close(self) -> None:
        """Release everything the engine holds; idempotent."""


# Engines may also define ``interrupt()``: make a ``process`` call in progress (on another
# thread) return or raise soon, like diffusers' interrupt flag. The processor calls it when
# stopping, so shutdown does not wait out a whole denoising run.


EngineFactory = Callable[..., SwapEngine]


@dataclass(frozen=True)
class EngineEntry:
    name: str
    factory: EngineFactory
    #: Given the engine options, None when the engine can run here, else why not and the fix.
    unavailable_reason: Callable[[dict[str, Any]], str | None] = field(
        default=lambda options: None)
    description: str = ""


_ENGINES: dict[str, EngineEntry] = {}
#: ``auto`` takes the first available of these: the best engine whose weights are present.
AUTO_PREFERENCE: list[str] = ["wan-animate", "passthrough"]


def register_engine(
    name: str,
    factory: EngineFactory,
    *,
    unavailable_reason: Callable[[dict[str, Any]], str | None] | None = None,
    description: str = "",
) -> None:
    """Register (or replace) an engine; ``factory(**options)`` builds one."""
    _ENGINES[name] = EngineEntry(name, factory, unavailable_reason or (lambda options: None),
                                 description)


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def resolve_engine_name(name: str, options: dict[str, Any] | None = None) -> str:
    """Map ``auto`` to a concrete engine and check that the named engine exists and can run."""
    options = options or {}
    if name == "auto":
        for candidate in AUTO_PREFERENCE:
            entry = _ENGINES.get(candidate)
            if entry is None:
                continue
            reason = entry.unavailable_reason(options)
            if reason is None:
                return candidate
            logger.warning("engine %s is not available, running in passthrough: %s",
                           candidate, reason)
        raise EngineError("no engine is available")
    entry = _ENGINES.get(name)
    if entry is None:
        raise EngineError(
            f"unknown engine {name!r}; available: {', '.join(['auto', *available_engines()])}"
        )
    reason = entry.unavailable_reason(options)
    if reason is not None:
        raise EngineError(f"engine {name} is not available: {reason}")
    return name


def create_engine(name: str, **options: Any) -> SwapEngine:
    """Build the engine ``name`` (not ``auto``: resolve it first) with its options."""
    entry = _ENGINES.get(name)
    if entry is None:
        raise EngineError(f"unknown engine {name!r}")
    return entry.factory(**options)


# The stand-in engines live beside the contract so the daemon runs end to end without torch.
from faceswap_cam.models import simple_engines as _simple_engines  # noqa: E402

_simple_engines.register()


def _wan_animate(**options: Any) -> SwapEngine:
    from faceswap_cam.models.wan import engine as wan_engine

    return wan_engine.create(**options)


def _wan_unavailable(options: dict[str, Any]) -> str | None:
    import importlib.util
    from pathlib import Path

    from faceswap_cam.models.weights import registry as weights

    missing = [m for m in ("torch", "diffusers", "transformers")
               if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{', '.join(missing)} not installed: install the model extra "
                "(pip install 'faceswap-cam[models]')")
    needed = [("wan-animate", options.get("wan_model"))]
    if options.get("preprocessor", "wan") != "stand-in":
        needed += [("detector", options.get("detector_model")),
                   ("pose", options.get("pose_model"))]
        if options.get("mode", "replace") == "replace":
            needed.append(("sam2", options.get("sam2_model")))
    for name, value in needed:
        local = value is not None and Path(str(value)).expanduser().exists()
        if not local and not weights.is_present(name):
            return (f"the {name} weights are not downloaded: "
                    f"faceswap-cam models download --only {name}")
    if not options.get("reference"):
        return "no reference face is set: pass --reference IMAGE"
    return None


register_engine("wan-animate", _wan_animate, unavailable_reason=_wan_unavailable,
                description="Wan2.2-Animate-14B (diffusers)")
