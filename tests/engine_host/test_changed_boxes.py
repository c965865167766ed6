"""Over a network only what an engine changed goes back: each frame's box, as JPEG."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceswap_cam.daemon.cli import _print_status
from faceswap_cam.daemon.engine_host import codec, host
from faceswap_cam.daemon.engine_host.child import OPTIONS_ENV
from faceswap_cam.daemon.engine_host.protocol import ProtocolError
from faceswap_cam.daemon.engine_host.proxy import EngineHostProxy
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp
from faceswap_cam.models.engine import EngineError, SwapResult, check_box
from faceswap_cam.models.simple_engines import DebugEngine
from tests.engine_host.helpers import daemon, serving, status_when

HEIGHT, WIDTH = 96, 128


def scene(seed: int) -> np.ndarray:
    """Smooth enough for JPEG to keep it close (noise would not compress near the eye's
    tolerance), different per seed."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    planes = [128 + 100 * np.sin(xs / (9 + seed) + ys / (13 + channel) + channel)
              for channel in range(3)]
    return np.dstack(planes).astype(np.uint8)


def test_only_the_boxes_travel_and_the_rest_is_the_original_exactly() -> None:
    originals = [scene(seed) for seed in range(3)]
    results = [255 - frame for frame in originals]
    boxes = [(0, 0, WIDTH, HEIGHT), (16, 8, 40, 50), (0, 0, 0, 0)]
    payload = codec.encode_boxes(results, boxes)
    whole = codec.encode_jpeg(results)
    assert len(payload) < 0.7 * len(whole)  # one frame whole, one a box, one nothing

    frames = codec.decode_boxes(payload, originals, boxes)
    assert np.abs(frames[0].astype(int) - results[0]).mean() < 4  # all of it through JPEG
    x, y, box_w, box_h = boxes[1]
    inside = np.zeros((HEIGHT, WIDTH), bool)
    inside[y:y + box_h, x:x + box_w] = True
    np.testing.assert_array_equal(frames[1][~inside], originals[1][~inside])
    assert np.abs(frames[1][inside].astype(int) - results[1][inside]).mean() < 4
    assert frames[2] is originals[2]  # unchanged: the client's own frame
    assert frames[1] is not originals[1] and not np.shares_memory(frames[1], originals[1])
    # A box is coded where it lies in its frame: the same bytes as from a packed copy.
    crop = results[1][y:y + box_h, x:x + box_w]
    assert not crop.flags.c_contiguous
    assert codec.encode_jpeg([crop]) == codec.encode_jpeg([crop.copy()])
    upside_down = results[1][::-1]  # rows at a negative stride: packed first
    assert codec.encode_jpeg([upside_down]) == codec.encode_jpeg([upside_down.copy()])


@pytest.mark.parametrize(("boxes", "words"), [
    ([(0, 0, WIDTH, HEIGHT)], "1 changed boxes for 2 frames"),
    ([(100, 0, 40, 10), (0, 0, 0, 0)], "not inside a 128x96 frame"),
    ([(0, 0, 10, 10), (0, 0, 0, 0)], "not a 10x10 JPEG"),
    ([(0, 0, 0, 0), (0, 0, 0, 0)], "bytes after its last frame"),
])
def test_boxes_that_do_not_fit_the_payload_or_the_frame_are_refused(
        boxes: list[tuple[int, int, int, int]], words: str) -> None:
    originals = [scene(0), scene(1)]
    payload = codec.encode_boxes([originals[0]], [(0, 0, 20, 20)])
    with pytest.raises(ProtocolError, match=words):
        codec.decode_boxes(payload, originals, boxes)


def test_a_box_is_checked_against_its_frame() -> None:
    assert check_box((1, 2, 3, 4), 10, 10) == (1, 2, 3, 4)
    for bad in [(0, 0, 11, 1), (-1, 0, 1, 1), (0, 0, 1), (0, 0, 1.5, 1), "0,0,1,1"]:
        with pytest.raises(ValueError):
            check_box(bad, 10, 10)


def test_an_engine_that_reports_bad_boxes_fails_its_batch_on_the_host() -> None:
    frames = [scene(0)]
    host._check_result(SwapResult(frames, changed=[(0, 0, WIDTH, HEIGHT)]), frames)
    for changed in ([], [(0, 0, WIDTH + 1, HEIGHT)]):
        with pytest.raises(RuntimeError, match=r"boxes|bad box"):
            host._check_result(SwapResult(frames, changed=changed), frames)


def test_the_debug_engine_inverts_its_box_alone_both_ways() -> None:
    engine = DebugEngine(box=(0.25, 0.5, 0.5, 0.5))
    frames = [scene(0), scene(1)]
    result = engine.process(frames)
    assert result.changed == [(32, 48, 64, 48)] * 2
    outputs = [np.zeros_like(frame) for frame in frames]
    assert engine.process_into(frames, outputs)
    for frame, out, into in zip(frames, result.frames, outputs, strict=True):
        np.testing.assert_array_equal(out, into)
        expected = frame.copy()
        expected[48:96, 32:96] = 255 - frame[48:96, 32:96]
        np.testing.assert_array_equal(out, expected)
    assert DebugEngine().process(frames).boxes() == [(0, 0, WIDTH, HEIGHT)] * 2
    with pytest.raises(EngineError, match="fractions inside the frame"):
        DebugEngine(box=(0.5, 0, 0.6, 1))


def test_a_remote_host_sends_back_only_the_changed_box(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [scene(seed) for seed in range(5)]
    sent_back = {}
    for name, box in (("whole", None), ("box", (0.25, 0.25, 0.5, 0.5))):
        monkeypatch.setenv(OPTIONS_ENV, json.dumps({} if box is None else {"box": box}))
        with serving("--engine", "debug") as (url, _):
            proxy = EngineHostProxy.connect(url, url.token or "", frame_size=None,
                                            call_timeout_s=10)
            try:
                received = proxy.bytes_received
                result = proxy.process(frames)
                sent_back[name] = proxy.bytes_received - received
            finally:
                proxy.close()
        assert result.swapped
        for frame, out in zip(frames, result.frames, strict=True):
            if box is None:
                assert np.abs(out.astype(int) - (255 - frame)).mean() < 4
                continue
            inside = np.zeros((HEIGHT, WIDTH), bool)
            inside[24:72, 32:96] = True
            # Outside the box: the daemon's own frame, not its JPEG copy on the host.
            np.testing.assert_array_equal(out[~inside], frame[~inside])
            assert np.abs(out[inside].astype(int) - (255 - frame[inside])).mean() < 4
        assert result.changed == ([(0, 0, WIDTH, HEIGHT)] * 5 if box is None
                                  else [(32, 24, 64, 48)] * 5)
        # Where the host's engine worked comes back too, for the daemon's status.
        assert proxy.generation_window == ((0, 0, WIDTH, HEIGHT, WIDTH, HEIGHT) if box is None
                                           else (32, 24, 64, 48, 64, 48))
    assert sent_back["box"] < 0.5 * sent_back["whole"]


def test_results_decode_on_several_threads_into_frames_the_daemon_let_go_of() -> None:
    originals = [scene(seed) for seed in range(4)]
    results = [255 - frame for frame in originals]
    boxes = [(0, 0, WIDTH, HEIGHT), (16, 8, 40, 50), (0, 0, 0, 0), (0, 0, WIDTH, HEIGHT)]
    payload = codec.encode_boxes(results, boxes)
    pool = codec.FramePool(8)
    with codec.Coder(threads=2) as coder:
        assert codec.encode_boxes(results, boxes, coder) == payload  # the same bytes
        first = codec.decode_boxes(payload, originals, boxes, coder, pool)
        alone = codec.decode_boxes(payload, originals, boxes)
        for together, inline in zip(first, alone, strict=True):
            np.testing.assert_array_equal(together, inline)
        kept = first[0]
        made = {id(frame) for frame in first}
        del first, together
        again = codec.decode_boxes(payload, originals, boxes, coder, pool)
    # The two frames let go of are reused; the one still held is not handed out twice.
    changed_again = [again[index] for index in (0, 1, 3)]
    assert all(frame is not kept for frame in changed_again)
    assert sum(id(frame) in made for frame in changed_again) == 2
    assert again[2] is originals[2]
    broken = bytearray(payload)
    broken[-200:] = bytes(200)  # the last JPEG's data, its header intact
    with pytest.raises(ProtocolError, match="did not decode"):
        codec.decode_boxes(bytes(broken), originals, boxes)


def test_status_says_where_the_engine_in_its_own_process_generated(
        apps: list[RealtimeFaceSwapApp], capsys: pytest.CaptureFixture[str]) -> None:
    # A child host on this machine: the batches go through shared memory.
    app = daemon(apps, engine="debug", engine_host="child")
    status = status_when(app, lambda s: s.generation is not None, 60, "a swapped batch")
    assert status.generation is not None
    assert status.generation.window == (0, 0, 320, 240) and status.generation.size == (320, 240)
    _print_status(status.model_dump(mode="json"), as_json=False)
    assert "generating 320x240, from the camera frame's 320x240 at (0, 0)" \
        in capsys.readouterr().out
    app.set_swap(False)
    assert app.status().generation is None  # nothing is generated meanwhile
