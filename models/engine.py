"""The swap-engine contract and the registry that creates engines by name.

An engine turns a batch of BGR frames into the same number of swapped frames. Generative
engines work on segments and keep temporal state between calls: the first call of a segment
chain takes ``first_batch`` frames, every later call ``next_batch`` frames that continue it, in
the engine's own cadence (:mod:`faceswap_cam.models.batching` holds that rule for the live
processor and offline rendering alike).

The caller owns segment continuity, never the engine: it decides when a chain ends (a gap, a
cadence or reference change, a batch with nobody in view) and calls ``reset()`` before the next
call. An engine reports what it made of a batch in a :class:`SwapResult`; it does not restart
its own state because of what it saw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)


#: ``(x, y, width, height)`` in pixels, as ``cv2.boundingRect`` gives it; width or height 0:
#: nothing.
Box = tuple[int, int, int, int]


class EngineError(RuntimeError):
    """An engine cannot be created or cannot run; the message says how to fix it."""


class EngineInterrupted(EngineError):
    """``interrupt()`` ended a call midway (its result was no longer wanted: the daemon is
    stopping, or gave up on the call): not a failure of the engine."""


class EngineLost(EngineError):
    """The engine itself went away during a call (its process died, its connection broke):
    the call's input was never judged, so the caller keeps it for the next engine it
    starts, unlike an input the engine answered by refusing it."""


@dataclass(frozen=True, slots=True)
class SwapResult:
    """What one ``process`` call made of a batch.

    ``frames`` has one frame per input, in order, same size, BGR uint8. ``swapped`` is False
    when the engine swapped nothing (nobody in view, or an engine that never swaps): the frames
    are then the inputs unchanged, shown as passthrough, and the segment chain ends there.

    One flag for the whole batch, not one per frame: a batch is generated as one segment or
    not at all, and continuity breaks for the whole chain either way.
    """

    frames: list[np.ndarray]
    swapped: bool = True
    #: Per frame, the box ``(x, y, width, height)`` outside which the frame is its input pixel
    #: for pixel, as an engine that pastes its work into the camera frame knows it; None: the
    #: whole frame may differ. A remote host sends only these boxes, and the daemon pastes
    #: them into its own copies of the inputs.
    changed: list[Box] | None = None

    @classmethod
    def untouched(cls, frames: Sequence[np.ndarray]) -> SwapResult:
        """Nothing swapped: the input frames go back as they came."""
        return cls(list(frames), swapped=False)

    def boxes(self) -> list[Box]:
        """``changed``, with each unknown box the whole frame."""
        if self.changed is not None:
            return list(self.changed)
        return [(0, 0, frame.shape[1], frame.shape[0]) for frame in self.frames]


def check_box(box: object, width: int, height: int) -> Box:
    """``box`` as a :data:`Box` inside a ``width`` x ``height`` frame, or ValueError."""
    if not isinstance(box, (tuple, list)) or len(box) != 4 \
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
        raise ValueError(f"a changed box is four integers (x, y, width, height), got {box!r}")
    x, y, box_w, box_h = box
    if min(x, y, box_w, box_h) < 0 or x + box_w > width or y + box_h > height:
        raise ValueError(f"the changed box {tuple(box)} is not inside a {width}x{height} frame")
    return x, y, box_w, box_h


@runtime_checkable
class SwapEngine(Protocol):
    first_batch: int
    next_batch: int

    def set_reference(self, image: np.ndarray) -> None:
        """Validate and encode a reference image (BGR) once; applies from the next batch."""

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        """Swap a batch of ``first_batch`` frames (a new chain) or ``next_batch`` frames (the
        chain goes on). After a result with ``swapped`` False, or after ``process`` raised,
        the caller resets the engine (or closes it) before the next call.

        The input frames are lent for the call only, and may be read-only: an engine reads
        them, never writes them, and keeps no reference to them (nor a view of them) once it
        returns; copy what it carries into the next call. The engine host hands an engine
        views of shared memory that the next batch overwrites. The frames it returns are its
        own (or the inputs themselves, returned unchanged)."""

    def reset(self) -> None:
        """Forget temporal state: the next call starts a new segment chain. Also clears an
        ``interrupt()``."""

    def interrupt(self) -> None:
        """Make a ``process`` call in progress on another thread return or raise soon (like
        diffusers' interrupt flag), so stopping never waits out a whole denoising run.

        Safe at any time and from any thread, also with no call running or after ``close``.
        It holds until ``reset()``: a call that starts meanwhile may raise at once, so an
        interrupt racing the start of a call is not lost."""

    def close(self) -> None:
        """Release everything the engine holds; idempotent."""


@runtime_checkable
class WritesIntoOutputs(Protocol):
    """Optional, beside ``SwapEngine.process``: the engine writes its results into arrays the
    caller lends (``outputs``, writable, one per frame, same shape), and returns ``swapped``
    (False: the outputs are untouched and the frames stand unchanged). The engine host lends
    the shared-memory slots the daemon will show, so the results cost no copy across."""

    def process_into(self, frames: Sequence[np.ndarray],
                     outputs: Sequence[np.ndarray]) -> bool: ...


class GenerationWindow(NamedTuple):
    """Where a model engine generated its last batch: the part of the camera frame
    (``x``, ``y``, ``width``, ``height``) and the size it was generated at. An engine may say
    it as ``generation_window`` (None before its first batch); ``status`` shows it."""

    x: int
    y: int
    width: int
    height: int
    gen_width: int
    gen_height: int


def generation_window(engine: object) -> GenerationWindow | None:
    """``engine``'s generation window, where it says one."""
    window = getattr(engine, "generation_window", None)
    return window if isinstance(window, GenerationWindow) else None


EngineFactory = Callable[..., SwapEngine]


@dataclass(frozen=True)
class EngineEntry:
    name: str
    factory: EngineFactory
    #: Given the engine options, None when the engine can run here, else why not and the fix.
    unavailable_reason: Callable[[dict[str, Any]], str | None] = field(
        default=lambda options: None)
    description: str = ""
    #: Given the engine options: (registered weights name, the setting naming a local folder
    #: or None) for each model it loads. The availability check and ``doctor`` both ask it.
    required_weights: Callable[[dict[str, Any]], list[tuple[str, str | None]]] = field(
        default=lambda options: [])


_ENGINES: dict[str, EngineEntry] = {}
#: ``auto`` takes the first available of these: the best engine whose weights are present.
AUTO_PREFERENCE: list[str] = ["wan-animate-2", "wan-animate", "passthrough"]


def register_engine(
    name: str,
    factory: EngineFactory,
    *,
    unavailable_reason: Callable[[dict[str, Any]], str | None] | None = None,
    description: str = "",
    required_weights: Callable[[dict[str, Any]], list[tuple[str, str | None]]] | None = None,
) -> None:
    """Register (or replace) an engine; ``factory(**options)`` builds one."""
    _ENGINES[name] = EngineEntry(name, factory, unavailable_reason or (lambda options: None),
                                 description, required_weights or (lambda options: []))


def required_weights(name: str, options: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The registered weights engine ``name`` loads with these options ([] for none)."""
    entry = _ENGINES.get(name)
    return [] if entry is None else entry.required_weights(options)


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def auto_choice(options: dict[str, Any]) -> tuple[str, list[str]]:
    """What ``auto`` runs with these options: the first available engine of
    :data:`AUTO_PREFERENCE`, and why each one before it is not available."""
    passed_over: list[str] = []
    for candidate in AUTO_PREFERENCE:
        entry = _ENGINES.get(candidate)
        if entry is None:
            continue
        reason = entry.unavailable_reason(options)
        if reason is None:
            return candidate, passed_over
        passed_over.append(f"{candidate} is not available: {reason}")
    raise EngineError("no engine is available")


def resolve_engine_name(name: str, options: dict[str, Any] | None = None) -> str:
    """Map ``auto`` to a concrete engine and check that the named engine exists and can run."""
    options = options or {}
    if name == "auto":
        chosen, passed_over = auto_choice(options)
        if passed_over:
            # Passthrough swaps nothing: that is worth a warning; a lesser engine is not.
            logger.log(logging.WARNING if chosen == "passthrough" else logging.INFO,
                       "engine auto runs %s: %s", chosen, "; ".join(passed_over))
        return chosen
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


#: An option an engine host passes to the availability check: its daemon sends the
#: reference over the wire, so none is needed to start.
REFERENCE_FROM_CLIENT = "reference_from_client"


def _weights_unavailable(options: dict[str, Any],
                         required: list[tuple[str, str | None]]) -> str | None:
    """Why a model engine cannot run: the model stack, its weights, a reference."""
    import importlib.util
    from pathlib import Path

    from faceswap_cam.models import defaults, weights

    missing = [m for m in ("torch", "diffusers", "transformers")
               if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{', '.join(missing)} not installed: install the model extra "
                f"({defaults.MODELS_EXTRA_INSTALL})")
    for name, value in required:
        local = value is not None and Path(value).expanduser().exists()
        if not local and not weights.is_present(name):
            return f"the {name} weights are not downloaded: {weights.fix_command(name)}"
    if not options.get("reference") and not options.get(REFERENCE_FROM_CLIENT):
        return "no reference face is set: pass --reference IMAGE"
    return None


def _wan_weights(options: dict[str, Any]) -> list[tuple[str, str | None]]:
    from faceswap_cam.models.wan import requirements

    return requirements.required_weights(options)


def _wan_unavailable(options: dict[str, Any]) -> str | None:
    return _weights_unavailable(options, _wan_weights(options))


register_engine("wan-animate", _wan_animate, unavailable_reason=_wan_unavailable,
                description="Wan2.2-Animate-14B (diffusers)", required_weights=_wan_weights)


def _wan_animate_2(**options: Any) -> SwapEngine:
    from faceswap_cam.models.wan2 import engine as wan2_engine

    return wan2_engine.create(**options)


def _wan2_weights(options: dict[str, Any]) -> list[tuple[str, str | None]]:
    from faceswap_cam.models.wan2 import variants

    return variants.required_weights(options)


def _wan2_unavailable(options: dict[str, Any]) -> str | None:
    try:
        required = _wan2_weights(options)
    except ValueError as exc:
        return str(exc)
    return _weights_unavailable(options, required)


register_engine("wan-animate-2", _wan_animate_2, unavailable_reason=_wan2_unavailable,
                description="Wan2.2-Animate-2-14B (diffusers modular; raw camera frames)",
                required_weights=_wan2_weights)
# Its presets (constants only) are known wherever the engine is.
from faceswap_cam.models.wan2 import presets as _wan2_presets  # noqa: E402, F401
