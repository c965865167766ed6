"""Small, bounded measurement helpers shared by the threads (memory stays flat)."""

from __future__ import annotations

import enum
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np


class RateMeter:
    """Events per second over a sliding window of the last ``window`` events."""

    def __init__(self, window: int = 30) -> None:
        self._times: deque[int] = deque(maxlen=window)
        self._lock = threading.Lock()

    def tick(self, now_ns: int | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic_ns() if now_ns is None else now_ns)

    def rate(self, now_ns: int | None = None) -> float:
        now = time.monotonic_ns() if now_ns is None else now_ns
        with self._lock:
            if len(self._times) < 2:
                return 0.0
            first, last = self._times[0], self._times[-1]
        # A stalled stream must read as slow, so the window ends now, not at the last event.
        span = max(last, now) - first
        return (len(self._times) - 1) * 1e9 / span if span > 0 else 0.0


class Samples:
    """The newest ``capacity`` samples of one quantity, for percentiles."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._values: deque[float] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        maxlen = self._values.maxlen
        assert maxlen is not None
        return maxlen

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def percentile(self, q: float) -> float | None:
        with self._lock:
            if not self._values:
                return None
            values = np.fromiter(self._values, dtype=np.float64)
        return float(np.percentile(values, q))

    def last(self) -> float | None:
        with self._lock:
            return self._values[-1] if self._values else None


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON for browsers and Starlette: NaN and infinities (live fps and
    latency figures can be either) become null, numpy scalars numbers, enums their values,
    paths and unknown objects text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    return str(value)
