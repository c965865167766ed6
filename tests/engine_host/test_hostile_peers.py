"""What a hostile peer found: a client that bends the host, and a host that bends the daemon.

Each case here was a defect a probe of the real processes showed: a traceback instead of a
refusal, a daemon locked out by a client without the token, memory or work without a bound,
a host over TCP naming a shared-memory segment of this machine, a JPEG that decodes for a
minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import shared_memory

import cv2
import numpy as np
import pytest
import simplejpeg

from faceswap_cam.daemon.engine_host import codec, host, protocol
from faceswap_cam.daemon.engine_host.address import EngineUrl, parse_engine_url
from faceswap_cam.daemon.engine_host.protocol import Error, ProtocolError, Stage, Welcome
from faceswap_cam.daemon.engine_host.proxy import EngineHostError, EngineHostProxy
from tests.engine_host.helpers import serving
from tests.engine_host.test_host_protocol import answer, closed, hello, raw, works


def header(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text


# --- messages no pydantic model can hold ----------------------------------------------------


@pytest.mark.parametrize(("text", "words"), [
    (b"[" * 50_000, "recursion limit"),  # json.loads raised RecursionError: a traceback
    (b'{"type": "hello", "protocol": 2, "version": "\\ud800", "token": "t"}', "hex escape"),
    (b'{"type": "hello", "protocol": 3, "version": "x", "token": "t", "rm": 1}',
     "rm: Extra inputs are not permitted"),
    (b'{"type": "stage", "id": -1, "width": 8, "height": 8}', "id: Input should be greater"),
    # A generation window is a box in the frame and a size, each side at least a pixel.
    (b'{"type": "result", "swapped": true, "count": 1, "codec": "shm", '
     b'"window": [0, 0, 0, 64, 32, 32]}', "window.2: Input should be greater"),
    (b'{"type": "result", "swapped": true, "count": 1, "codec": "shm", '
     b'"window": [0, 0, 64, 64, 32, 100000000000]}', "window.5: Input should be less"),
    (b'{"type": "result", "swapped": true, "count": 1, "codec": "shm", "window": [0, 0]}',
     "window.2: Field required"),
    (b'{"type": "result", "swapped": true, "count": 1, "codec": "shm", '
     b'"window": [0, 0, 8, 8, 8, 8, 8]}', "window: Tuple should have at most 6 items"),
])
def test_malformed_headers_are_refused_saying_what_is_wrong(text: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as caught:
        protocol.decode(header(text))
    assert "errors.pydantic.dev" not in str(caught.value)  # the reason, not a link


def test_the_host_refuses_them_and_serves_on() -> None:
    with serving("--engine", "debug") as (url, process):
        for text in (b"[" * 50_000,
                     b'{"type": "hello", "protocol": 2, "version": "\\ud800", "token": "t"}'):
            with raw(url) as bad:  # type: ignore[attr-defined]
                bad.send(header(text))
                refusal = answer(bad)
                assert isinstance(refusal, Error) and "malformed header" in refusal.message
                assert closed(bad) == 1002
        works(url)
        assert process.poll() is None


# --- the host ----------------------------------------------------------------------------


def test_a_client_that_never_says_hello_does_not_keep_the_daemon_out() -> None:
    with serving("--engine", "debug") as (url, _), raw(url) as silent:  # type: ignore[attr-defined]
        works(url)  # within the silent one's 10 s to say hello: it holds nothing
        silent.send(hello(url, token="guess"))
        assert isinstance(answer(silent), Error)


def test_a_connection_that_does_not_upgrade_in_time_is_closed() -> None:
    # uvicorn timed idle connections out only after a first request: these were held for
    # good, and enough of them (from anyone on the network) fill the host's descriptors.
    with serving("--engine", "debug") as (url, _):
        address = (url.address.host or "127.0.0.1", url.address.port)
        silent = socket.create_connection(address)
        halfway = socket.create_connection(address)
        halfway.sendall(b"GET /engine HTTP/1.1\r\nHost: x\r\n")  # and no more
        started = time.monotonic()
        works(url)  # meanwhile a daemon connects and swaps
        for held in (silent, halfway):
            with held:
                held.settimeout(host.HELLO_TIMEOUT_S + 10)
                assert held.recv(1024) == b""  # closed by the host
        assert time.monotonic() - started < host.HELLO_TIMEOUT_S + 5


def test_a_batch_larger_than_the_engine_takes_is_refused() -> None:
    # Small JPEGs declaring 7680x7680 made the host allocate ~350 MB a frame, up to 161.
    with serving("--engine", "debug") as (url, _), raw(url) as greedy:  # type: ignore[attr-defined]
        greedy.send(hello(url))
        welcome = answer(greedy)
        assert isinstance(welcome, Welcome)
        count = max(welcome.first_batch, welcome.next_batch) + 1
        frames = [np.zeros((16, 16, 3), np.uint8)] * count
        greedy.send(protocol.encode(protocol.Process(count=count, width=16, height=16,
                                                     codec="jpeg"), codec.encode_jpeg(frames)))
        refusal = answer(greedy)
        assert isinstance(refusal, Error) and f"a batch of {count} frames" in refusal.message


def test_the_host_grants_no_compression_that_would_inflate_a_small_message() -> None:
    # With per-message deflate granted, 64 MB of zeros crossed as 64 KB and the host inflated
    # each such message in full: its memory grew 64 MB a message, up to ~1.2 GB.
    from websockets.sync.client import connect

    with serving("--engine", "debug") as (url, _), connect(
            url.address.websocket_uri(), compression="deflate", proxy=None) as offering:
        assert offering.response is not None
        assert "Sec-WebSocket-Extensions" not in offering.response.headers
        assert offering.protocol.extensions == []
        offering.send(hello(url))
        assert isinstance(answer(offering), Welcome)  # served, uncompressed


def test_the_host_takes_its_reference_as_png_only() -> None:
    # A progressive JPEG's decoding has no bound but its size on the wire; a PNG's has its
    # header's (checked against the limits before a pixel is decoded).
    face = np.random.default_rng(1).integers(0, 255, (160, 128, 3), np.uint8)
    ok, progressive = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    with serving("--engine", "debug") as (url, _), raw(url) as client:  # type: ignore[attr-defined]
        client.send(hello(url))
        assert isinstance(answer(client), Welcome)
        client.send(protocol.encode(protocol.Reference(), progressive.tobytes()))
        refusal = answer(client)
        assert isinstance(refusal, Error) and "must arrive as PNG" in refusal.message
        client.send(protocol.encode(protocol.Reference(), codec.encode_png(face)))
        assert isinstance(answer(client), protocol.Ok)  # the connection stayed


def jpeg(width: int = 32, height: int = 24, value: int = 90) -> bytes:
    return codec.encode_jpeg([np.full((height, width, 3), value, np.uint8)])


@pytest.fixture
def held_decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Staged 32x24 frames decode only once the event is set (a slow machine, or a large
    frame, made certain); other sizes decode at once."""
    release = threading.Event()
    decode = codec.decode_jpeg

    def held(payload: memoryview, sizes: list[tuple[int, int]],
             coder: codec.Coder) -> list[np.ndarray]:
        if sizes == [(32, 24)]:
            release.wait(10)
        return decode(payload, sizes, coder)

    monkeypatch.setattr(codec, "decode_jpeg", held)
    yield release
    release.set()


def test_staged_frames_waiting_to_decode_are_bounded_even_under_one_id(
        held_decodes: threading.Event) -> None:
    async def flood() -> None:
        with codec.Coder(threads=1) as coder:
            staged = host._StagedFrames(3, coder)
            data = memoryview(jpeg())
            for _ in range(3):  # one id again and again: the newest replaces the last
                staged.add(Stage(id=0, width=32, height=24), data)
            with pytest.raises(ProtocolError, match="more than 3 staged frames waiting"):
                staged.add(Stage(id=0, width=32, height=24), data)
            held_decodes.set()
            (frame,) = await staged.take([0], 32, 24)
            assert frame.shape == (24, 32, 3)

    asyncio.run(flood())


def test_a_staged_frame_is_checked_before_it_is_queued(held_decodes: threading.Event) -> None:
    async def junk() -> None:
        with codec.Coder(threads=1) as coder:
            staged = host._StagedFrames(3, coder)
            with pytest.raises(ProtocolError, match="bytes after its last frame"):
                staged.add(Stage(id=0, width=32, height=24),
                           memoryview(jpeg() + b"\0" * 1000))
            with pytest.raises(ProtocolError, match="not a 64x24 JPEG"):
                staged.add(Stage(id=1, width=64, height=24), memoryview(jpeg()))
            assert not staged._decoding  # neither took a thread or stayed in memory

    asyncio.run(junk())


def test_frames_staged_during_a_batch_cannot_take_its_frames_away(
        held_decodes: threading.Event) -> None:
    async def race() -> None:
        with codec.Coder(threads=1) as coder:
            staged = host._StagedFrames(4, coder)
            for frame_id in range(2):
                staged.add(Stage(id=frame_id, width=32, height=24),
                           memoryview(jpeg(value=10 * frame_id)))
            batch = asyncio.ensure_future(staged.take([0, 1], 32, 24))
            await asyncio.sleep(0)  # the batch waits on frame 0's decode
            for frame_id in range(2, 6):  # allowed meanwhile: the newest push 0 and 1 out
                staged.add(Stage(id=frame_id, width=16, height=16), memoryview(jpeg(16, 16)))
                await staged._frames[frame_id]
            assert list(staged._frames) == [2, 3, 4, 5]
            held_decodes.set()
            frames = await batch  # was KeyError: 1, reported as an engine failure
            assert [int(frame.mean()) for frame in frames] == pytest.approx([0, 10], abs=2)

    asyncio.run(race())


def test_the_engine_thread_keeps_no_result_after_the_call() -> None:
    class Frames:
        pass

    async def call() -> weakref.ref[Frames]:
        calls = host._EngineThread()
        result = await calls.run(Frames)
        await calls.wait_idle()
        return weakref.ref(result)

    kept = asyncio.run(call())
    gc.collect()
    assert kept() is None  # a batch a lost client left behind was held until the next call


# --- JPEGs from the other side ------------------------------------------------------------


def test_a_progressive_jpeg_is_refused_before_decoding() -> None:
    # Any number of scans, each a pass over the whole image: a hostile host's 3 MB of them
    # kept the daemon's coder threads busy for a minute and its process from exiting.
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    ok, progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and codec.jpeg_size(progressive.tobytes()) is None
    payload = struct.pack(">I", progressive.size) + progressive.tobytes()
    with pytest.raises(ProtocolError, match="not a 64x48 JPEG"):
        codec.decode_boxes(payload, [image], [(0, 0, 64, 48)])
    # What this program writes passes, grey as colour.
    grey = simplejpeg.encode_jpeg(np.ascontiguousarray(image[:, :, :1]), colorspace="GRAY")
    for written in (jpeg(64, 48)[4:], grey):  # [4:]: after the payload's length
        assert codec.jpeg_size(written) == (64, 48)


# --- the daemon, against a host that lies -------------------------------------------------


@contextmanager
def lying_host(welcome: Welcome) -> Iterator[EngineUrl]:
    """A WebSocket server on loopback that answers any hello with ``welcome``."""
    from websockets.sync.server import ServerConnection, serve

    def handler(connection: ServerConnection) -> None:
        connection.recv(timeout=10)
        connection.send(protocol.encode(welcome))
        with contextlib.suppress(Exception):
            connection.recv(timeout=10)  # until the client leaves

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        try:
            yield parse_engine_url(f"fscam://127.0.0.1:{port}?token=t")
        finally:
            server.shutdown()


def welcome(**fields: object) -> Welcome:
    return Welcome(**{"protocol": protocol.PROTOCOL_VERSION, "version": "x", "engine": "debug",
                      "first_batch": 5, "next_batch": 4, "shm": None, "codec": "jpeg",
                      **fields})


def test_shared_memory_offered_over_tcp_is_refused_and_left_alone() -> None:
    victim = shared_memory.SharedMemory(create=True, size=1 << 20)
    try:
        assert victim.buf is not None
        victim.buf[:4] = b"mine"
        with lying_host(welcome(shm=victim.name, shm_inputs=1, shm_results=1,
                                codec="shm")) as url, \
                pytest.raises(EngineHostError, match="shared memory over TCP"):
            EngineHostProxy.connect(url, "t", frame_size=(64, 48), call_timeout_s=5)
        # Not attached, not unlinked, not written: another process's memory stays its own.
        again = shared_memory.SharedMemory(name=victim.name)
        assert again.buf is not None and bytes(again.buf[:4]) == b"mine"
        again.close()
    finally:
        victim.close()
        victim.unlink()


def test_the_daemon_keeps_no_more_staged_frames_than_a_batch_needs() -> None:
    with lying_host(welcome(staged=644)) as url:
        proxy = EngineHostProxy.connect(url, "t", frame_size=None, call_timeout_s=5)
        try:
            assert proxy._stage_capacity == 2 * 5 + 1  # a frame held each, not 644
        finally:
            proxy.close()
