"""Frames in shared memory: staged as they are fed, results handed out without a copy."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from faceswap_cam.daemon.engine_host.codec import SharedFrames, frame_bytes
from faceswap_cam.daemon.engine_host.protocol import ProtocolError

WIDTH, HEIGHT = 64, 48


def frame(value: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), value, np.uint8)


@contextmanager
def shared_pair(inputs: int, results: int) -> Iterator[tuple[SharedFrames, SharedFrames]]:
    host = SharedFrames.create(WIDTH, HEIGHT, inputs, results)
    client = SharedFrames.attach(host.name, WIDTH, HEIGHT, inputs, results)
    try:
        yield host, client
    finally:
        client.close()
        host.close()


def test_the_host_hands_the_engine_read_only_views_and_can_answer_in_place() -> None:
    with shared_pair(3, 0) as (host, client):
        slots = client.slots_for([frame(10), frame(20), frame(30)])
        inputs = host.input_views(slots)
        assert not any(view.flags.writeable for view in inputs)
        assert all(view.base is not None for view in inputs)  # views, not copies
        with pytest.raises(ValueError, match="read-only"):
            inputs[0][0, 0, 0] = 1
        # An engine handing its inputs back, reordered: no slot is overwritten before read.
        host.write_results([inputs[2], inputs[0], frame(99)], slots, None)
        del inputs
        assert [int(out[0, 0, 0]) for out in client.read(slots)] == [30, 10, 99]


def test_a_staged_frame_is_in_its_slot_before_the_batch_is_sent() -> None:
    with shared_pair(5, 0) as (host, client):
        fed = [frame(value) for value in (1, 2, 3)]
        for pixels in fed:
            assert client.stage(pixels)
        staged_values = [int(view[0, 0, 0]) for view in host.input_views(range(3))]
        assert staged_values == [1, 2, 3]
        # Changing the daemon's array now shows whether the batch copies it again: it must
        # not (the daemon's frames never change; this only makes a second copy visible).
        fed[1][:] = 77
        slots = client.slots_for(fed)
        assert slots == [0, 1, 2]
        assert int(host.input_views([1])[0][0, 0, 0]) == 2
        # A frame that was not staged is copied in at the batch, into a free slot.
        late = frame(5)
        slots = client.slots_for([fed[2], late])
        assert slots[0] == 2 and slots[1] not in (2,)
        assert int(host.input_views([slots[1]])[0][0, 0, 0]) == 5


def test_frames_fed_during_a_batch_never_overwrite_its_slots() -> None:
    with shared_pair(3, 0) as (host, client):
        batch = [frame(1), frame(2)]
        slots = client.slots_for(batch)
        assert client.stage(frame(3))  # the one slot left
        assert client.stage(frame(4))  # over frame 3, the oldest staged one not in flight
        assert [int(view[0, 0, 0]) for view in host.input_views(slots)] == [1, 2]
        client.release()
        client.slots_for([frame(5), frame(6), frame(7)])
        assert not client.stage(frame(8))  # every slot is in flight: not staged


def test_results_come_back_in_result_slots_that_stay_busy_while_referred_to() -> None:
    with shared_pair(2, 3) as (host, client):
        slots = client.slots_for([frame(10), frame(20)])
        into = client.free_results(2)
        assert into is not None
        host.write_results([frame(110), frame(120)], slots, into)
        first = client.result_frames(into)
        assert [int(out[0, 0, 0]) for out in first] == [110, 120]
        # A view of a result (an overlay, a crop) keeps its slot busy as well.
        crop = first[0][4:8, 4:8]
        assert client.free_results(2) is None  # both results are still held
        del first
        free = client.free_results(2)  # the second result's slot, and the third
        assert free is not None and into[0] not in free and into[1] in free
        assert client.free_results(3) is None
        del crop
        again = client.free_results(3)
        assert again is not None and sorted(again) == [0, 1, 2]


def test_results_are_arrays_of_the_client_that_the_host_cannot_reach_after_close() -> None:
    with shared_pair(1, 1) as (host, client):
        slots = client.slots_for([frame(5)])
        into = client.free_results(1)
        assert into is not None
        host.write_results([frame(6)], slots, into)
        (result,) = client.result_frames(into)
        keeper = weakref.ref(result)
    # Both sides closed: what the daemon still shows stays mapped and readable.
    assert keeper() is not None and int(result.min()) == 6


def test_bad_slots_are_refused() -> None:
    with shared_pair(2, 2) as (host, _):
        with pytest.raises(ProtocolError, match="input slots"):
            host.input_views([0, 2])
        with pytest.raises(ProtocolError, match="input slots"):
            host.input_views([1, 1])
        with pytest.raises(ProtocolError, match="result slots"):
            host.write_results([frame(1)], [0], [5])


def test_room_for_counts_the_inputs_first(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stats:
        f_frsize = 4096
        f_bavail = 0

    stats = Stats()
    monkeypatch.setattr(os, "statvfs", lambda _: stats)
    per_frame = frame_bytes(1280, 720)
    stats.f_bavail = int(per_frame * 30 * 1.1) // 4096 + 1
    assert SharedFrames.room_for(1280, 720, 19, 72) == 11
    stats.f_bavail = int(per_frame * 10 * 1.1) // 4096
    assert SharedFrames.room_for(1280, 720, 19, 72) is None


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no tmpfs /dev/shm here")
def test_shared_memory_is_reserved_when_made_so_a_full_dev_shm_cannot_sigbus() -> None:
    host = SharedFrames.create(640, 480, 3, 1)
    try:
        blocks = os.stat(f"/dev/shm/{host.name.lstrip('/')}").st_blocks * 512
        # A sparse file would fault its pages in on first write.
        assert blocks >= 4 * frame_bytes(640, 480)
    finally:
        host.close()
