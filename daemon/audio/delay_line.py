"""A delay line whose delay changes without clicks and without pitch warble.

The FaceSwap Mic plays the user's microphone late by exactly the swapped video's age, and that
age changes (0.5-8 s) when the engine's batching changes or the video falls back to the live
camera. Resampling ("varispeed") would follow smoothly but warbles the voice, so the delay
moves in the two ways a listener accepts:

* shorter by D: audio is skipped. The old read position is cross-faded (equal power) into the
  new one over ``fade_s``, so the cut is as quiet as an edit in a recording.
* longer by D: nothing may be heard twice (the far end would hear repeated words). The output
  fades out, holds silent for D while the read position stands still, and fades back in where
  it stopped: a short pause.

A new target during a change starts from where the change is: a fade-out that is no longer
needed turns back into a fade-in at the same gain, a pause that became too long ends early (the
skipped audio was never heard), and a cross-fade (30 ms) finishes first.

One thread (the mic thread) owns a DelayLine: there are no locks. Memory is one ring allocated
at construction, ``max_delay_s`` plus 0.1 s of margin: 8 s at 48 kHz mono float32 is
388,800 frames, about 1.5 MB; it never grows.
"""

from __future__ import annotations

import logging
import math
from enum import Enum

import numpy as np

logger = logging.getLogger(__name__)

#: The longest run of frames processed at once; a larger block is processed in pieces. The ring
#: holds the longest delay plus this, so a block never overwrites audio that is still to be read.
CHUNK_S = 0.1


class _Mode(Enum):
    STEADY = "steady"  # read position advances, full gain
    FADE_OUT = "fade_out"  # read position advances, gain falling (the start of an increase)
    HOLD = "hold"  # silence, read position stands still until the delay reaches the target
    FADE_IN = "fade_in"  # read position advances, gain rising
    CROSSFADE = "crossfade"  # two read positions: the old fades out, the new (shorter) fades in


class DelayLine:
    """Delays (frames, channels) float32 blocks by a target that may change at any time.

    Times are counted in frames: the output frame at time ``t`` plays the input frame
    ``t - delay``; input before the first frame (or before ``reset()``) is silence.
    """

    def __init__(
        self,
        sample_rate: int = 48_000,
        channels: int = 1,
        max_delay_s: float = 8.0,
        fade_s: float = 0.03,
    ) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError("sample_rate and channels must be positive")
        if not (math.isfinite(max_delay_s) and max_delay_s >= 0):
            raise ValueError(f"max_delay_s must be >= 0, got {max_delay_s}")
        if not (math.isfinite(fade_s) and fade_s > 0):
            raise ValueError(f"fade_s must be > 0, got {fade_s}")
        self._rate = sample_rate
        self._channels = channels
        self._max = round(max_delay_s * sample_rate)
        self._fade = max(1, round(fade_s * sample_rate))
        self._chunk = max(1, round(CHUNK_S * sample_rate))
        self._ring = np.zeros((self._max + self._chunk, channels), dtype=np.float32)
        self._clamped = False
        self._target = 0
        self._reset_state()

    def _reset_state(self) -> None:
        self._ring.fill(0.0)
        self._t = 0  # frames written so far = the time of the next output frame
        self._p = -self._target  # the next input frame the main read position plays
        self._q = 0  # the new read position during a cross-fade
        self._level = self._fade  # fade position: 0 silent .. fade full gain
        self._mode = _Mode.STEADY

    # ---- properties -------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def max_delay_s(self) -> float:
        return self._max / self._rate

    @property
    def target_delay_s(self) -> float:
        return self._target / self._rate

    @property
    def delay_s(self) -> float:
        """The delay applied now (during a cross-fade: the old one, until it finishes)."""
        return (self._t - self._p) / self._rate

    @property
    def changing(self) -> bool:
        """Whether a fade, pause or cross-fade is under way."""
        return self._mode is not _Mode.STEADY or self._t - self._p != self._target

    @property
    def clamped(self) -> bool:
        """Whether the last target asked for more than ``max_delay_s`` (or less than 0)."""
        return self._clamped

    @property
    def buffer_bytes(self) -> int:
        """The ring's size: fixed at construction."""
        return int(self._ring.nbytes)

    # ---- control ----------------------------------------------------------------------------

    def set_target_delay(self, seconds: float) -> float:
        """Moves the delay towards ``seconds`` from the next processed frame on; returns the
        target actually used (clamped to [0, max_delay_s], logged when that changes it)."""
        if not math.isfinite(seconds):
            raise ValueError(f"delay must be finite, got {seconds}")
        wanted = round(seconds * self._rate)
        target = min(max(wanted, 0), self._max)
        clamped = target != wanted
        if clamped and not self._clamped:
            logger.warning(
                "audio delay %.3f s is outside [0, %.3f] s; using %.3f s",
                seconds,
                self.max_delay_s,
                target / self._rate,
            )
        self._clamped = clamped
        self._target = target
        return target / self._rate

    def reset(self) -> None:
        """Forgets all audio (the input device changed): silence until the delay has passed.
        The delay jumps to the target, which is inaudible because nothing is playing."""
        self._reset_state()

    # ---- processing -------------------------------------------------------------------------

    def process(self, block: np.ndarray) -> np.ndarray:
        """Writes ``block`` (frames, channels) and returns as many delayed frames."""
        data = np.asarray(block, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != self._channels:
            raise ValueError(f"expected a (frames, {self._channels}) block, got shape {data.shape}")
        out = np.empty_like(data)
        for start in range(0, data.shape[0], self._chunk):
            piece = data[start : start + self._chunk]
            self._write(piece)
            end = start + piece.shape[0]
            i = start
            while i < end:
                i += self._run(out[i:end], self._t + (i - start))
            self._t += piece.shape[0]
        return out

    def _write(self, piece: np.ndarray) -> None:
        n = piece.shape[0]
        size = self._ring.shape[0]
        at = self._t % size
        first = min(n, size - at)
        self._ring[at : at + first] = piece[:first]
        self._ring[: n - first] = piece[first:]

    def _read(self, start: int, out: np.ndarray) -> None:
        """Copies input frames start.. into ``out``; frames before the first are silence."""
        n = out.shape[0]
        silent = min(n, max(0, -start))
        out[:silent] = 0.0
        size = self._ring.shape[0]
        pos = start + silent
        left = n - silent
        while left > 0:
            at = pos % size
            take = min(left, size - at)
            out[n - left : n - left + take] = self._ring[at : at + take]
            pos += take
            left -= take

    def _decide(self, now: int) -> None:
        """Starts, turns or ends a change; called before each run of frames."""
        delay = now - self._p
        target = self._target
        mode = self._mode
        if mode is _Mode.STEADY:
            if target > delay:
                if self._p <= 0:
                    # Nothing real was played yet: going back only replays silence.
                    self._p = now - target
                else:
                    self._mode = _Mode.FADE_OUT
            elif target < delay:
                self._mode = _Mode.CROSSFADE
                self._q = now - target
                self._level = 0
        elif mode is _Mode.FADE_OUT:
            if target <= delay:
                self._mode = _Mode.FADE_IN  # no longer needed: turn back at the same gain
        elif mode is _Mode.HOLD:
            if target <= delay:
                # Silent: jumping forward skips audio nobody heard, so it cannot click.
                self._p = now - target
                self._mode = _Mode.FADE_IN
        elif mode is _Mode.FADE_IN and target > delay:
            self._mode = _Mode.FADE_OUT
        # A cross-fade always finishes (it is short); the new target is taken up after it.

    def _run(self, out: np.ndarray, now: int) -> int:
        """Fills the start of ``out`` (output frames from time ``now``); returns how many."""
        self._decide(now)
        n = int(out.shape[0])
        fade = self._fade
        mode = self._mode
        if mode is _Mode.STEADY:
            self._read(self._p, out)
            self._p += n
            return n
        if mode is _Mode.HOLD:
            k = min(n, self._target - (now - self._p))
            out[:k] = 0.0
            return k
        if mode is _Mode.FADE_OUT:
            k = min(n, self._level)
            # Half-frame offsets: no frame is played at exactly zero gain, so none is lost.
            x = (self._level - 0.5 - np.arange(k)) / fade
            self._read(self._p, out[:k])
            out[:k] *= _fade_gain(x)
            self._p += k
            self._level -= k
            if self._level == 0:
                self._mode = _Mode.HOLD
            return k
        if mode is _Mode.FADE_IN:
            k = min(n, fade - self._level)
            x = (self._level + 0.5 + np.arange(k)) / fade
            self._read(self._p, out[:k])
            out[:k] *= _fade_gain(x)
            self._p += k
            self._level += k
            if self._level == fade:
                self._mode = _Mode.STEADY
            return k
        # CROSSFADE: equal power, because the two positions carry unrelated audio.
        k = min(n, fade - self._level)
        angle = (self._level + 0.5 + np.arange(k)) * (math.pi / 2 / fade)
        other = np.empty((k, self._channels), dtype=np.float32)
        self._read(self._p, out[:k])
        self._read(self._q, other)
        out[:k] *= np.cos(angle).astype(np.float32)[:, None]
        other *= np.sin(angle).astype(np.float32)[:, None]
        out[:k] += other
        self._p += k
        self._q += k
        self._level += k
        if self._level == fade:
            self._p = self._q
            self._mode = _Mode.STEADY
        return k


def _fade_gain(x: np.ndarray) -> np.ndarray:
    """Raised-cosine gain for x in [0, 1] (0 silent, 1 full), as a column; its slope is zero
    at both ends, so fading to or from silence has no corner."""
    return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)[:, None]
