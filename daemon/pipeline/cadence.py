"""The engine cadence k (every k-th camera frame goes to the engine), from its measured speed."""

from __future__ import annotations

import logging
import statistics
from collections import deque

from faceswap_cam.models.batching import CADENCE_MARGIN, MAX_CADENCE, cadence_for

logger = logging.getLogger(__name__)

#: Batches a raise looks at; most of them must have been too slow.
RAISE_WINDOW = 3
#: A cadence in use is kept while the engine keeps up with this much to spare, though a fresh
#: choice leaves the full margin: a change costs a chain restart, so a speed that sits at the
#: margin (the plan's H200 live batch is 0.5 % inside it) must not flip k on noise.
KEEP_MARGIN = 1.05
#: Batches a lowering looks at; all but the slowest must fit the lower cadence.
LOWER_WINDOW = 5


class CadenceController:
    """Chooses k from the engine's time per frame: the processor's thread observes, others read k.

    Every change of k ends the engine's segment chain (its carried frames would no longer be
    k ticks apart), and until the new chain's first batch is back the camera shows its
    fallback: so k moves on evidence, not on one batch. It rises when most of the last
    ``RAISE_WINDOW`` batches (at least two) could not keep up at k with ``KEEP_MARGIN``, and
    falls when all the last ``LOWER_WINDOW`` but the slowest fit a lower k with the full
    margin; either way to the k that leaves the full margin, which the other rule then keeps
    (the gap between the two margins is what stops k flapping). One slow batch only delays
    the next (the input absorbs it, and the processor skips ahead if a whole batch backs up).
    The first batch after an engine loads is not measured: it pays once for the device's
    warm-up (kernel selection, memory pools, compilation).
    """

    def __init__(self, fps: float, *, start: int = 1, margin: float = CADENCE_MARGIN,
                 max_cadence: int = MAX_CADENCE) -> None:
        self.fps = fps
        self.margin = margin
        self.max_cadence = max_cadence
        self.cadence = max(1, min(max_cadence, start))
        self._per_frame: deque[float] = deque(maxlen=max(RAISE_WINDOW, LOWER_WINDOW))
        self._warming_up = True

    def engine_loaded(self) -> None:
        """A new engine: its first batch is its warm-up, and the old one's speed is no guide."""
        self._warming_up = True
        self._per_frame.clear()

    def observe(self, per_frame_s: float) -> bool:
        """Count one batch's time per frame; True when k changed (the chain must end)."""
        if self._warming_up:
            self._warming_up = False
            logger.debug("engine warm-up batch: %.1f ms per frame, not counted",
                         per_frame_s * 1000)
            return False
        self._per_frame.append(per_frame_s)
        k = new_k = self.cadence
        typical = per_frame_s
        recent = list(self._per_frame)[-RAISE_WINDOW:]
        if len(recent) >= 2:
            typical = statistics.median_low(recent)
            if self._cadence_for(typical, min(self.margin, KEEP_MARGIN)) > k:
                new_k = self._cadence_for(typical, self.margin)
        if new_k == k and len(self._per_frame) == LOWER_WINDOW:
            typical = sorted(self._per_frame)[-2]  # all but the slowest
            new_k = min(k, self._cadence_for(typical, self.margin))
        if new_k == k:
            return False
        logger.info("engine cadence %d -> %d (%.1f ms per frame)", k, new_k, typical * 1000)
        self.cadence = new_k
        return True

    def _cadence_for(self, per_frame_s: float, margin: float) -> int:
        return cadence_for(per_frame_s, self.fps, margin=margin, max_cadence=self.max_cadence)
