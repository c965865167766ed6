"""Frames go to the engine host as they are fed, so a complete batch is already there."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from faceswap_cam.daemon.engine_host import protocol
from faceswap_cam.daemon.engine_host.codec import encode_jpeg
from faceswap_cam.daemon.engine_host.protocol import Error, Process, Stage, Welcome
from faceswap_cam.daemon.engine_host.proxy import EngineHostProxy
from faceswap_cam.daemon.frames import Frame
from faceswap_cam.daemon.pipeline.processor import AsyncFaceSwapProcessor
from faceswap_cam.models.engine import SwapResult
from faceswap_cam.models.simple_engines import DebugEngine
from tests.engine_host.helpers import serving
from tests.engine_host.test_host_protocol import answer, closed, hello, raw, works

WIDTH, HEIGHT = 64, 48


def camera_frames(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8) for _ in range(count)]


def test_a_staged_remote_batch_carries_no_frames_and_swaps_the_same() -> None:
    with serving("--engine", "debug") as (url, _):
        proxy = EngineHostProxy.connect(url, url.token or "", frame_size=(WIDTH, HEIGHT),
                                        call_timeout_s=10)
        try:
            frames = camera_frames(proxy.first_batch, seed=1)
            sent_alone = proxy.process(frames).frames  # nothing staged: JPEGs with the batch
            before = proxy.bytes_sent
            for pixels in frames:
                proxy.stage(pixels)
            staging = proxy.bytes_sent - before
            staged = proxy.process(frames).frames
            batch = proxy.bytes_sent - before - staging
            # The frames went ahead; the batch itself is a header naming them.
            assert staging > 1000 * len(frames) and batch < 1024
            # The same JPEGs decoded on the host: the very same pixels come back.
            for alone, ahead in zip(sent_alone, staged, strict=True):
                assert np.array_equal(alone, ahead)
            # A batch with frames that did not go ahead carries them all.
            proxy.stage(frames[0])
            mixed = [frames[0], *camera_frames(proxy.first_batch - 1, seed=2)]
            before = proxy.bytes_sent
            proxy.process(mixed)
            assert proxy.bytes_sent - before > 1000 * len(mixed)
        finally:
            proxy.close()


def test_the_host_refuses_frames_that_were_never_staged_and_keeps_serving() -> None:
    with serving("--engine", "debug") as (url, process):
        with raw(url) as client:  # type: ignore[attr-defined]
            client.send(hello(url))
            welcome = answer(client)
            assert isinstance(welcome, Welcome) and welcome.staged > 0
            frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            client.send(protocol.encode(Stage(id=3, width=WIDTH, height=HEIGHT),
                                        encode_jpeg([frame])))
            client.send(protocol.encode(Process(count=2, width=WIDTH, height=HEIGHT,
                                                codec="jpeg", staged=[3, 4])))
            refusal = answer(client)
            assert isinstance(refusal, Error) and "not staged" in refusal.message
            assert closed(client) == 1002
        with raw(url) as client:  # type: ignore[attr-defined]
            client.send(hello(url))
            assert isinstance(answer(client), Welcome)
            client.send(protocol.encode(Stage(id=0, width=WIDTH, height=HEIGHT), b"not a jpeg"))
            client.send(protocol.encode(Process(count=1, width=WIDTH, height=HEIGHT,
                                                codec="jpeg", staged=[0])))
            refusal = answer(client)
            assert isinstance(refusal, Error) and "JPEG" in refusal.message
            assert closed(client) == 1002
        works(url)
        assert process.poll() is None


class StagingEngine(DebugEngine):
    """Records what the feeder staged, and the batches it then got."""

    def __init__(self) -> None:
        super().__init__(first_batch=3, next_batch=3)
        self.staged: list[int] = []
        self.batches: list[list[int]] = []
        self.batch_done = threading.Event()

    def stage(self, pixels: np.ndarray) -> None:
        self.staged.append(int(pixels[0, 0, 0]))

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        self.batches.append([int(frame[0, 0, 0]) for frame in frames])
        self.batch_done.set()
        return super().process(frames)


def test_the_processor_stages_each_frame_it_is_fed() -> None:
    engine = StagingEngine()
    processor = AsyncFaceSwapProcessor(lambda: engine, fps=30, engine_name="staging",
                                       cadence_margin=0.0)
    with processor:
        processor.start()
        for batch in ([0, 1, 2], [3, 4, 5]):
            engine.batch_done.clear()
            for index in batch:
                processor.submit(Frame(np.full((4, 4, 3), index, np.uint8), index, index))
            assert engine.batch_done.wait(5)
    assert engine.batches == [[0, 1, 2], [3, 4, 5]]
    # Once the engine is up, every frame fed goes ahead, in order, before its batch (the
    # first batch's frames may have come while the engine was still loading).
    assert engine.staged[-3:] == [3, 4, 5]
    assert engine.staged == sorted(engine.staged)


def test_an_engine_that_writes_into_lent_outputs_gives_what_it_returns() -> None:
    engine = DebugEngine(first_batch=2, next_batch=2)
    frames = camera_frames(2, seed=3)
    outputs = [np.zeros_like(frame) for frame in frames]
    assert engine.process_into(frames, outputs)
    for output, returned in zip(outputs, engine.process(frames).frames, strict=True):
        assert np.array_equal(output, returned)
