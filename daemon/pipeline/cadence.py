"""The engine cadence k (every k-th camera frame goes to the engine), from its measured speed."""

from __future__ import annotations

import logging
import statistics
from collections import deque

from faceswap_cam.models.batching import CADENCE_MARGIN, MAX_CADENCE, cadence_for

logger = logging.getLogger(__name__)

#: A cadence in use is kept while the engine keeps up with this much to spare, though a fresh
#: choice leaves the full margin: a change costs a chain restart, so a speed that sits at the
#: margin must not flip k on noise.
KEEP_MARGIN = 1.05
#: A rise is decided on the median of at most this many batches since the last change. The
#: median, not the mean: an engine whose mean misses k while its median fits (calls of 0.70 s,
#: every third 0.35 s slower, at k = 3: 0.82 s on average, a batch due every 0.8 s) falls
#: behind slowly, and the processor's skip-ahead bounds that. benchmarks/live_path.py
#: measured it at 9.8 swapped fps, 2.15 s capture to screen; rising on the mean took it to
#: k = 4 for 7.5 fps at 2.04 s (smooth playout waits for the slow calls either way).
WINDOW = 12
#: Batches a decision needs after a change (or after the warm-up).
MIN_SAMPLES = 3
#: Batches after a change before k may fall one step. Every reversal (a move against the one
#: before) doubles it, up to ``MAX_HOLD`` (384 batches of 8 new frames: seven minutes at
#: k = 4), so that an engine too noisy for either k settles on the higher one rather than
#: flapping. The fall is decided on the median of every batch since the change (the last
#: ``MAX_HOLD``), so the longer k has held, the more evidence a fall takes.
HOLD = WINDOW
MAX_HOLD = 384
#: Batches after a change before k may fall two steps or more (the engine is far faster
#: than k needs: whatever slowed it, another program on the GPU say, has gone). Undoing a
#: far move doubles it, up to ``MAX_HOLD_FAR``: a GPU shared in bursts must not swing k
#: between far-apart values.
HOLD_FAR = 6
MAX_HOLD_FAR = 96


class CadenceController:
    """Chooses k from the engine's time per frame: the processor's thread observes, others read k.

    Every change of k ends the engine's segment chain (its carried frames would no longer be
    k ticks apart), and until the new chain's first batch is back the camera shows its
    fallback: so k moves on evidence, not on one batch, and the evidence is the batches since
    the last change (at least ``MIN_SAMPLES``). k rises when the median time per frame of the
    last ``WINDOW`` of them misses k with ``KEEP_MARGIN``; it falls, once the hold has passed
    (``HOLD``; ``HOLD_FAR`` for two steps or more; both backed off on reversals), when the median
    of all of them fits a lower k with the full margin. Either way it goes to the k a fresh
    choice with the full margin takes, which the other rule then keeps. After a rise, the k it
    left (the start, or a k the engine was kept at) is taken back on the keep rule's own
    terms: once the hold has passed, when the median of all the batches since fits it with
    ``KEEP_MARGIN``; without this, an engine that k keeps but a fresh choice would not take
    (0.73 to 0.76 s a batch of 8 at 30 fps and k = 3) stayed a step high for good after any
    slow spell. Only once: if k has to rise again after going back, it stays up. One slow
    batch only
    delays the next (the input absorbs it, and the processor skips ahead if a whole batch
    backs up) and, for a few seconds, smooth playout's delay. Batches that found nobody in
    view are not measured (they stop early), nor is the first batch after an engine loads: it
    pays once for the device's warm-up (kernel selection, memory pools, compilation).
    """

    def __init__(self, fps: float, *, start: int = 1, margin: float = CADENCE_MARGIN,
                 max_cadence: int = MAX_CADENCE) -> None:
        self.fps = fps
        self.margin = margin
        self.max_cadence = max_cadence
        self.cadence = max(1, min(max_cadence, start))
        # Since the last change; no hold is longer, so its length is the batches since then.
        self._per_frame: deque[float] = deque(maxlen=MAX_HOLD)
        self._warming_up = True
        self._hold = HOLD
        self._hold_far = HOLD_FAR
        self._last_move = 0  # +1 up, -1 down, 0 none yet
        self._last_far = False  # whether the last move was two steps or more
        self._left: int | None = None  # the k the rises left, until k is back there
        self._returned = False  # whether the last move went back to it

    @property
    def warming_up(self) -> bool:
        """Whether the next swapped batch is the engine's warm-up (not measured)."""
        return self._warming_up

    def engine_loaded(self) -> None:
        """A new engine: its first batch is its warm-up, and the old one's speed is no guide."""
        self._warming_up = True
        self._per_frame.clear()
        self._hold = HOLD
        self._hold_far = HOLD_FAR
        self._last_move = 0
        self._last_far = False
        self._left = None
        self._returned = False

    def observe(self, per_frame_s: float) -> bool:
        """Count one batch's seconds per new frame; True when k changed (the chain must end)."""
        if self._warming_up:
            self._warming_up = False
            logger.debug("engine warm-up batch: %.1f ms per frame, not counted",
                         per_frame_s * 1000)
            return False
        self._per_frame.append(per_frame_s)
        since_change = len(self._per_frame)
        if since_change < MIN_SAMPLES:
            return False
        k = self.cadence
        recent = statistics.median(list(self._per_frame)[-WINDOW:])
        if self._cadence_for(recent, min(self.margin, KEEP_MARGIN)) > k:
            return self._move(self._cadence_for(recent, self.margin), recent)
        typical = statistics.median(self._per_frame)
        chosen = self._cadence_for(typical, self.margin)
        if chosen < k and (since_change >= self._hold
                           or (chosen <= k - 2 and since_change >= self._hold_far)):
            return self._move(chosen, typical)
        left = self._left
        if (left is not None and left < k and since_change >= self._hold
                and self._cadence_for(typical, min(self.margin, KEEP_MARGIN)) <= left):
            return self._move(left, typical, returning=True)
        return False

    def _move(self, new_k: int, typical: float, *, returning: bool = False) -> bool:
        direction = 1 if new_k > self.cadence else -1
        far = abs(new_k - self.cadence) >= 2
        if self._last_move and direction != self._last_move:
            self._hold = min(MAX_HOLD, 2 * self._hold)
            if self._last_far:  # a far move undone
                self._hold_far = min(MAX_HOLD_FAR, 2 * self._hold_far)
        self._last_far = far
        if direction > 0 and not self._returned:  # the lowest k the rises left
            self._left = self.cadence if self._left is None else min(self._left, self.cadence)
        elif direction < 0 and self._left is not None and new_k <= self._left:
            self._left = None
        # A rise that undoes a return leaves nothing to go back to: an engine that noisy at
        # the lower k settles on the higher one, as the holds would have it (the return and
        # the rise share the keep margin, so without this they would take turns for good).
        self._returned = returning
        logger.info("engine cadence %d -> %d (%.1f ms per frame)", self.cadence, new_k,
                    typical * 1000)
        self.cadence = new_k
        self._last_move = direction
        self._per_frame.clear()
        return True

    def _cadence_for(self, per_frame_s: float, margin: float) -> int:
        return cadence_for(per_frame_s, self.fps, margin=margin, max_cadence=self.max_cadence)
