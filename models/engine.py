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
        """Swap a batch; returns the same number of frames, in order, same size, BGR uint8."""

    def reset(self) -> None:
        """Forget temporal state (continuity broke: gap, reference change, restart)."""

    def close(self) -> None:
        """Release everything the engine holds; idempotent."""


EngineFactory = Callable[..., SwapEngine]


@dataclass(frozen=True)
class EngineEntry:
    name: str
    factory: EngineFactory
    #: Returns None when the engine can run here, else why not and how to fix it.
    unavailable_reason: Callable[[], str | None] = field(default=lambda: None)
    description: str = ""


_ENGINES: dict[str, EngineEntry] = {}
#: ``auto`` takes the first available of these: the best engine whose weights are present.
AUTO_PREFERENCE: list[str] = ["wan-animate", "passthrough"]


def register_engine(
    name: str,
    factory: EngineFactory,
    *,
    unavailable_reason: Callable[[], str | None] | None = None,
    description: str = "",
) -> None:
    """Register (or replace) an engine; ``factory(**options)`` builds one."""
    _ENGINES[name] = EngineEntry(name, factory, unavailable_reason or (lambda: None), description)


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def resolve_engine_name(name: str) -> str:
    """Map ``auto`` to a concrete engine and check that the named engine exists and can run."""
    if name == "auto":
        for candidate in AUTO_PREFERENCE:
            entry = _ENGINES.get(candidate)
            if entry is None:
                continue
            reason = entry.unavailable_reason()
            if reason is None:
                return candidate
            logger.warning("engine %s is not available: %s", candidate, reason)
        raise EngineError("no engine is available")
    entry = _ENGINES.get(name)
    if entry is None:
        raise EngineError(
            f"unknown engine {name!r}; available: {', '.join(['auto', *available_engines()])}"
        )
    reason = entry.unavailable_reason()
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
