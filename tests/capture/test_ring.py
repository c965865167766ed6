"""The capture ring: newest frames kept, waiters woken."""

from __future__ import annotations

import threading

import numpy as np

from faceswap_cam.daemon.capture.ring import FrameRing
from faceswap_cam.daemon.frames import Frame


def test_ring_keeps_the_newest_and_wakes_waiters() -> None:
    ring = FrameRing(3)
    pixels = np.zeros((2, 2, 3), np.uint8)
    got: list[list[int]] = []
    waiting = threading.Event()

    def reader() -> None:
        waiting.set()
        got.append([f.index for f in ring.wait_newer(4, timeout=5)])

    thread = threading.Thread(target=reader)
    for i in range(5):
        ring.push(Frame(pixels, i, 0))
    assert [f.index for f in ring.wait_newer(-1, timeout=0)] == [2, 3, 4]
    assert ring.overwritten == 2
    thread.start()
    waiting.wait()
    ring.push(Frame(pixels, 5, 0))
    thread.join()
    assert got == [[5]]
    ring.close()
    assert ring.wait_newer(5, timeout=None) == []
