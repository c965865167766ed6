"""The preview sink over real HTTP on a loopback port: routes, stream content, guards, lifecycle."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from typing import Any

import cv2
import numpy as np
import pytest

from faceswap_cam.daemon.config import Settings
from faceswap_cam.daemon.outputs.base import SinkContext, SinkError, SinkWorker, Tick, create_sink
from faceswap_cam.daemon.outputs.preview import PreviewSink
from faceswap_cam.daemon.pipeline.overlay import draw_stats

SIZE = (320, 240)
BLOCK = (slice(60, 180), slice(100, 220))  # rows, cols: well inside, away from JPEG edges
GREENISH_BGR = (40, 200, 90)
ORANGE_BGR = (20, 120, 230)


def frame_with_block(colour: tuple[int, int, int], background: int = 0) -> np.ndarray:
    frame = np.full((SIZE[1], SIZE[0], 3), background, np.uint8)
    frame[BLOCK] = colour
    return frame


def block_colour(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    assert image.shape == (SIZE[1], SIZE[0], 3)
    # The block's inner part: JPEG blurs the edges.
    inner = image[BLOCK[0].start + 8:BLOCK[0].stop - 8, BLOCK[1].start + 8:BLOCK[1].stop - 8]
    return np.asarray(inner.reshape(-1, 3).mean(axis=0))


def assert_colour(actual: np.ndarray, expected: tuple[int, int, int]) -> None:
    assert np.abs(actual - np.array(expected)).max() < 12, f"{actual} != {expected} (BGR)"


def tick(number: int = 1) -> Tick:
    return Tick(number=number, kind="passthrough", published_ns=time.monotonic_ns(),
                latency_ms=12.5)


def get(url: str, host: str | None = None, timeout: float = 5.0
        ) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def read_part(response: http.client.HTTPResponse) -> bytes:
    """One JPEG from a multipart/x-mixed-replace body."""
    line = response.readline()
    while line in (b"\r\n", b"\n"):
        line = response.readline()
    assert line.strip() == b"--faceswapcamframe", line
    headers = {}
    while (line := response.readline().strip()):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    assert headers[b"content-type"] == b"image/jpeg"
    body = response.read(int(headers[b"content-length"]))
    assert response.read(2) == b"\r\n"
    return body


STATS: dict[str, Any] = {"capture_fps": 29.97, "engine": "debug", "engine_state": "ready",
                         "frames_published": 7, "latency_ms": float("nan")}


@pytest.fixture
def sink() -> Iterator[PreviewSink]:
    preview = PreviewSink(port=0, max_fps=60, stats=lambda: dict(STATS))
    preview.open(SIZE, 30.0)
    try:
        yield preview
    finally:
        preview.close()


def test_page_is_served(sink: PreviewSink) -> None:
    assert sink.url == f"http://127.0.0.1:{sink.port}/"
    assert sink.port != 0
    status, headers, body = get(sink.url)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-store"
    page = body.decode()
    assert '<img id="stream" src="/stream.mjpg"' in page
    assert 'id="stats"' in page and 'id="frames"' in page and "/stats.json" in page
    # No external assets: the page must work offline and in an OBS browser source.
    assert "http://" not in page and "https://" not in page


def test_stats_json(sink: PreviewSink) -> None:
    status, headers, body = get(sink.url + "stats.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    stats = json.loads(body)
    assert stats["capture_fps"] == 29.97
    assert stats["engine"] == "debug"
    assert stats["frames_published"] == 7
    assert stats["latency_ms"] is None  # NaN would not parse in a browser
    assert stats["preview"]["url"] == sink.url
    assert stats["preview"]["clients"] == 0
    assert stats["preview"]["size"] == list(SIZE)


def test_stats_provider_failure_is_reported_not_fatal() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    preview = PreviewSink(port=0, stats=broken)
    preview.open(SIZE, 30.0)
    try:
        status, _, body = get(preview.url + "stats.json")
        assert status == 200
        assert "boom" in json.loads(body)["stats_error"]
    finally:
        preview.close()


def test_snapshot_503_until_a_frame_then_the_frame(sink: PreviewSink) -> None:
    status, headers, _ = get(sink.url + "snapshot.jpg")
    assert status == 503
    assert headers["Cache-Control"] == "no-store"
    sink.send(frame_with_block(GREENISH_BGR), tick())
    status, headers, body = get(sink.url + "snapshot.jpg")
    assert status == 200
    assert headers["Content-Type"] == "image/jpeg"
    assert_colour(block_colour(body), GREENISH_BGR)
    # Nobody watches the stream: the frame was encoded for the snapshot only.
    assert sink.frames_encoded == 1


def test_stream_yields_current_then_new_frames(sink: PreviewSink) -> None:
    sink.send(frame_with_block(GREENISH_BGR), tick(1))
    with urllib.request.urlopen(sink.url + "stream.mjpg", timeout=5) as response:
        assert response.headers["Content-Type"] == (
            "multipart/x-mixed-replace; boundary=faceswapcamframe")
        assert response.headers["Cache-Control"] == "no-store"
        assert_colour(block_colour(read_part(response)), GREENISH_BGR)
        assert sink.clients == 1
        sink.send(frame_with_block(ORANGE_BGR), tick(2))
        assert_colour(block_colour(read_part(response)), ORANGE_BGR)

    # A client that left is noticed on the next writes to it (frames keep coming in a daemon).
    def client_gone() -> bool:
        sink.send(frame_with_block(ORANGE_BGR), tick(3))
        return sink.clients == 0

    wait_for(client_gone)


def test_no_encoding_without_watchers_and_fps_cap() -> None:
    preview = PreviewSink(port=0, max_fps=2)
    preview.open(SIZE, 30.0)
    try:
        for number in range(10):
            preview.send(frame_with_block(GREENISH_BGR), tick(number))
        assert preview.frames_encoded == 0
        with urllib.request.urlopen(preview.url + "stream.mjpg", timeout=5) as response:
            read_part(response)  # the newest frame, encoded for the new client
            for number in range(10, 30):
                preview.send(frame_with_block(ORANGE_BGR), tick(number))
            # 20 sends in far less than the 0.5 s interval: one encode, not twenty.
            assert preview.frames_encoded == 2
            assert_colour(block_colour(read_part(response)), ORANGE_BGR)
    finally:
        preview.close()


def test_host_header_guard(sink: PreviewSink) -> None:
    for bad in ("evil.example", f"evil.example:{sink.port}", "127.0.0.1:1",
                f"127.0.0.2:{sink.port}"):
        status, _, _ = get(sink.url + "stats.json", host=bad)
        assert status == 403, bad
    assert get(sink.url + "snapshot.jpg", host="attacker.test")[0] == 403
    for good in (f"127.0.0.1:{sink.port}", f"localhost:{sink.port}",
                 f"LOCALHOST:{sink.port}", f"[::1]:{sink.port}"):
        assert get(sink.url + "stats.json", host=good)[0] == 200, good


def test_unknown_path_is_404(sink: PreviewSink) -> None:
    assert get(sink.url + "nope")[0] == 404
    assert get(sink.url + "stream.mjpg/../../etc/passwd")[0] == 404


def test_close_ends_streams_promptly_is_idempotent_and_frees_the_port() -> None:
    preview = PreviewSink(port=0)
    preview.open(SIZE, 30.0)
    port = preview.port
    preview.send(frame_with_block(GREENISH_BGR), tick())
    ended = threading.Event()

    def watch() -> None:
        with urllib.request.urlopen(preview.url + "stream.mjpg", timeout=10) as response:
            read_part(response)
            response.read()  # blocks until the server ends the stream
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_for(lambda: preview.clients == 1)
    # An idle connection that never sends a request must not hold close() up either.
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.connect()
    try:
        started = time.monotonic()
        preview.close()
        assert time.monotonic() - started < 1.0
        assert ended.wait(2.0), "the stream client was not ended by close()"
        preview.close()  # idempotent
        preview.send(frame_with_block(ORANGE_BGR), tick())  # ignored after close
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        idle.close()
        watcher.join(2.0)
    again = PreviewSink(port=port)
    again.open(SIZE, 30.0)
    try:
        assert get(again.url)[0] == 200
    finally:
        again.close()


def test_close_without_open_is_harmless() -> None:
    preview = PreviewSink(port=0)
    preview.close()
    preview.close()


def test_port_in_use_is_a_sink_error(sink: PreviewSink) -> None:
    second = PreviewSink(port=sink.port)
    with pytest.raises(SinkError) as caught:
        second.open(SIZE, 30.0)
    message = str(caught.value)
    assert str(sink.port) in message
    assert "--preview-port 0" in message
    second.close()
    assert get(sink.url)[0] == 200  # the first one is untouched


def test_only_loopback_hosts() -> None:
    with pytest.raises(SinkError, match="loopback"):
        PreviewSink(host="0.0.0.0")


def test_created_from_settings_with_port_override() -> None:
    settings = Settings.model_validate({"preview_port": 1234, "preview_fps": 5})
    context = SinkContext(options=settings.model_dump(), stats=lambda: {"engine": "x"})
    preview = create_sink("preview", context)
    assert isinstance(preview, PreviewSink)
    assert preview.port == 1234
    assert preview.max_fps == 5
    assert preview.overlay is True and preview.slots == 1
    override = create_sink("preview:0", context)
    assert isinstance(override, PreviewSink)
    assert override.port == 0
    with pytest.raises(SinkError, match="port"):
        create_sink("preview:eighty", context)


def test_driven_by_a_sink_worker_with_the_overlay() -> None:
    """The daemon's path: publisher -> SinkWorker (draws the overlay) -> PreviewSink."""
    preview = PreviewSink(port=0, stats=lambda: dict(STATS))
    preview.open(SIZE, 30.0)
    worker = SinkWorker(preview, lambda pixels, t: draw_stats(pixels, t.stats))
    worker.start()
    try:
        frame = frame_with_block(GREENISH_BGR, background=200)
        worker.offer(frame, Tick(number=1, kind="swapped", published_ns=time.monotonic_ns(),
                                 latency_ms=40.0, stats=dict(STATS)))
        wait_for(lambda: worker.sent == 1)
        status, _, body = get(preview.url + "snapshot.jpg")
        assert status == 200
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        assert_colour(block_colour(body), GREENISH_BGR)
        # The overlay darkens a band at the top; the bottom stays the plain background.
        assert image[:10].mean() < 150
        assert abs(float(image[-10:].mean()) - 200) < 10
        assert not worker.error
    finally:
        worker.close()  # closes the sink too
    assert worker.sent == 1
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(preview.url, timeout=2)
