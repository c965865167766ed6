"""Wan-Animate with context parallelism (Ulysses) on 2 CPU ranks over gloo equals one process.

Two ranks are spawned once for the module (tiny random models, about 20 s): each builds the
same tiny pipeline, enables :mod:`faceswap_cam.models.wan.parallel` and runs (a) single
transformer forwards and (b) whole streaming segments driven by rank 0 through
``run_on_all_ranks`` (the other rank follows in ``serve_other_ranks``), then saves what it
got. This process computes the same things without parallelism and compares.

Tolerance: float32, ``atol = rtol = 1e-5`` on the transformer output and ``atol = 1e-4`` on
decoded frames in [0, 1]. The ranks do the same arithmetic as one process, but not in the same
order: each linear layer multiplies 6 or 8 rows instead of 12 or 16 and each attention runs one
head over the gathered sequence instead of both heads (after an all-to-all), so the BLAS and
SDPA kernels block their sums differently. That gives float32 rounding differences (~1e-7
relative per operation) that add up through two blocks and, for frames, two denoising steps
and the VAE decoder; a wrong split (a token meeting the wrong frame or a missing shard) is off
by the size of the values themselves (0.1 to 1).
"""

from __future__ import annotations

import importlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")

from faceswap_cam.models.wan import parallel  # noqa: E402
from faceswap_cam.models.wan.streaming import (  # noqa: E402
    GenerationInterrupted,
    SegmentInputs,
    StreamingWanAnimate,
)
from tests.wan_tiny import (  # noqa: E402
    FACE_SIZE,
    HEIGHT,
    PROMPT_MAX_LEN,
    WIDTH,
    build_tiny_components,
    cpu_context_parallel,
)

WORLD = 2
# L=5: 3 latent frames x 4 tokens = 12, so each rank's 6 tokens end mid-frame (the face
# adapter's padding path); L=9: 16 tokens, shards on frame boundaries.
SEGMENTS = (5, 9)
STREAM_SEGMENT, CARRY, STEPS = 5, 1, 2
PROMPT = "a person talking to the camera"
DIT_TOL = {"atol": 1e-5, "rtol": 1e-5}
FRAME_ATOL = 1e-4
TIMEOUT_S = 120


# --- what both sides run -------------------------------------------------------------------

def dit_inputs(segment: int, config: Any) -> dict[str, Any]:
    """One transformer forward's inputs for a segment of ``segment`` frames (seeded)."""
    generator = torch.Generator().manual_seed(segment)
    frames = (segment - 1) // 4 + 1
    h, w = HEIGHT // 8, WIDTH // 8

    def rand(*size: int) -> Any:
        return torch.randn(size, generator=generator)

    return {
        "hidden_states": rand(1, int(config.in_channels), frames + 1, h, w),
        "timestep": torch.tensor([700.0]),
        "encoder_hidden_states": rand(1, PROMPT_MAX_LEN, int(config.text_dim)),
        "encoder_hidden_states_image": rand(1, 5, int(config.image_dim)),
        "pose_hidden_states": rand(1, int(config.latent_channels), frames, h, w),
        "face_pixel_values": rand(1, 3, segment, FACE_SIZE, FACE_SIZE),
        "return_dict": False,
    }


def clip(frames: int, start: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    face = rng.integers(0, 255, (FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    index = range(start, start + frames)
    return ([np.roll(scene, i, axis=1) for i in index], [np.roll(face, i, axis=0) for i in index])


REFERENCE = np.random.default_rng(7).integers(0, 255, (48, 40, 3), dtype=np.uint8)


class FrameEngine:
    """Numpy frames in and out, as the engine host calls an engine."""

    def __init__(self, pipe: Any) -> None:
        self.stream = StreamingWanAnimate(
            pipe, height=HEIGHT, width=WIDTH, mode="animate", segment_frames=STREAM_SEGMENT,
            carry=CARRY, steps=STEPS, prompt=PROMPT, max_sequence_length=PROMPT_MAX_LEN)

    def set_reference(self, image: np.ndarray) -> None:
        self.stream.set_reference(PIL.Image.fromarray(image))

    def process(self, pose: list[np.ndarray], face: list[np.ndarray]) -> np.ndarray:
        return self.stream.generate(SegmentInputs(
            pose=[PIL.Image.fromarray(p) for p in pose],
            face=[PIL.Image.fromarray(f) for f in face]))

    def reset(self) -> None:
        self.stream.reset()


def tiny_pipe() -> Any:
    diffusers: Any = importlib.import_module("diffusers")  # untyped
    return diffusers.WanAnimatePipeline(**build_tiny_components())


# --- the ranks -----------------------------------------------------------------------------

def _rank(rank: int, port: int, out_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)  # two ranks share the machine's cores
    context = parallel.init_distributed("cpu")
    try:
        pipe = tiny_pipe()
        transformer = pipe.transformer.eval()
        with cpu_context_parallel():
            handle = parallel.enable_context_parallel(transformer, context)
        seen: list[int] = []
        transformer.blocks[0].attn1.register_forward_pre_hook(
            lambda module, args: seen.append(int(args[0].shape[1])))
        results: dict[str, Any] = {}
        with torch.no_grad():
            for segment in SEGMENTS:
                results[f"dit{segment}"] = transformer(**dit_inputs(segment, transformer.config))[0]
        results["local_tokens"] = list(seen)
        engine = FrameEngine(pipe)
        if context.is_host:
            run = parallel.run_on_all_ranks
            run(context, engine, "set_reference", REFERENCE)
            results["segments"] = [run(context, engine, "process", *clip(STREAM_SEGMENT)),
                                   run(context, engine, "process",
                                       *clip(STREAM_SEGMENT - CARRY, STREAM_SEGMENT))]
            handle.request_stop()
            try:
                run(context, engine, "process", *clip(STREAM_SEGMENT - CARRY))
            except GenerationInterrupted:
                results["interrupted"] = True
            handle.clear_stop()
            run(context, engine, "reset")
            results["after_stop"] = run(context, engine, "process", *clip(STREAM_SEGMENT))
            parallel.stop_other_ranks(context)
        else:
            parallel.serve_other_ranks(context, engine)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        parallel.shutdown_distributed()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    mp: Any = importlib.import_module("torch.multiprocessing")  # untyped
    out = tmp_path_factory.mktemp("ranks")
    context = mp.start_processes(_rank, args=(_free_port(), str(out)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):  # raises if a rank failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {TIMEOUT_S} s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    pipe = tiny_pipe()
    transformer = pipe.transformer.eval()
    results: dict[str, Any] = {}
    with torch.no_grad():
        for segment in SEGMENTS:
            results[f"dit{segment}"] = transformer(**dit_inputs(segment, transformer.config))[0]
    engine = FrameEngine(pipe)
    engine.set_reference(REFERENCE)
    results["segments"] = [engine.process(*clip(STREAM_SEGMENT)),
                           engine.process(*clip(STREAM_SEGMENT - CARRY, STREAM_SEGMENT))]
    return results


# --- the checks ----------------------------------------------------------------------------

def test_each_rank_runs_the_blocks_on_half_the_tokens(ranks: list[dict[str, Any]]) -> None:
    tokens = [((s - 1) // 4 + 2) * (HEIGHT // 16) * (WIDTH // 16) for s in SEGMENTS]
    for result in ranks:
        assert result["local_tokens"] == [t // WORLD for t in tokens]


@pytest.mark.parametrize("segment", SEGMENTS)
def test_transformer_on_two_ranks_equals_one_process(ranks: list[dict[str, Any]],
                                                     single: dict[str, Any],
                                                     segment: int) -> None:
    expected = single[f"dit{segment}"]
    for result in ranks:  # the output is gathered whole on every rank
        got = result[f"dit{segment}"]
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, **DIT_TOL)


def test_streaming_segments_on_two_ranks_equal_one_process(ranks: list[dict[str, Any]],
                                                           single: dict[str, Any]) -> None:
    got, expected = ranks[0]["segments"], single["segments"]
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=0, atol=FRAME_ATOL)


def test_a_stop_reaches_every_rank_and_the_stream_goes_on(ranks: list[dict[str, Any]]) -> None:
    host = ranks[0]
    assert host.get("interrupted") is True
    # After the stop and a reset, the ranks are still in step: the first segment again.
    np.testing.assert_allclose(host["after_stop"], host["segments"][0], rtol=0, atol=0)


def test_call_arguments_with_arrays_survive_the_broadcast() -> None:
    arrays: list[np.ndarray] = []
    frames = [np.zeros((2, 3, 3), np.uint8), np.ones((2, 3, 3), np.uint8)]
    skeleton = parallel._take_arrays(((frames, "x"), {"mask": frames[1], "k": 3}), arrays)
    assert len(arrays) == 3  # each occurrence travels (a batch never repeats a frame)
    (args, kwargs) = parallel._put_arrays(skeleton, arrays)
    assert args[1] == "x" and kwargs["k"] == 3
    assert args[0][1] is frames[1] and kwargs["mask"] is frames[1]


def test_enable_refuses_without_an_accelerator_or_a_group() -> None:
    context = parallel.RankContext(0, 2, 0, torch.device("cpu"))
    transformer = tiny_pipe_transformer()
    if torch.accelerator.device_count() == 0:
        with pytest.raises(RuntimeError, match="accelerator"):
            parallel.enable_context_parallel(transformer, context)
    with pytest.raises(ValueError, match="at least 2 ranks"):
        parallel.enable_context_parallel(transformer, parallel.RankContext(
            0, 1, 0, torch.device("cpu")))


def tiny_pipe_transformer() -> Any:
    return build_tiny_components()["transformer"]


def test_init_distributed_names_the_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in parallel.LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR is not set: start the ranks with"):
        parallel.init_distributed("cpu")
