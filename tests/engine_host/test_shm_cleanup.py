"""Shared memory cannot outlive the processes that map it, however they end."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from faceswap_cam.daemon.engine_host.child import ChildEngineHost

SHM = Path("/dev/shm")


def segments() -> set[str]:
    return {path.name for path in SHM.glob("psm_*")}


@pytest.mark.skipif(not SHM.is_dir(), reason="no /dev/shm here: segment names live elsewhere")
def test_a_host_killed_with_its_whole_process_group_leaves_no_segment_behind() -> None:
    before = segments()
    host = ChildEngineHost("debug", {"first_batch": 3, "next_batch": 3}, frame_size=(320, 240),
                           call_timeout_s=10, log_level="WARNING")
    try:
        proxy = host.connect()
        frames = [np.full((240, 320, 3), 40, np.uint8)] * 3
        assert proxy.process(frames).swapped  # through the segment: it is in use
        # Named nowhere once both sides have it mapped.
        assert segments() - before == set()
        pid = host.pid
        assert pid is not None
        # The host, its resource tracker and all: as a service manager's SIGKILL or an
        # OOM kill of the group ends them, with nobody left to unlink anything.
        os.killpg(pid, signal.SIGKILL)
        proxy.close()
    finally:
        host.close()  # reaps the host
    assert segments() - before == set()
