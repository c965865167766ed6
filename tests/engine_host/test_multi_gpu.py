"""``engine serve --gpus 2`` on the CPU: two ranks over gloo, the tiny Wan-Animate, real processes.

The group (a launcher and its two rank processes) serves a proxy over a Unix socket with
shared memory, like a daemon's child host, and its frames are compared with those of the
single-process host (``--gpus 1``) given the same batches.

Tolerance: at most 1 (of 255) per pixel value. ``tests/models/test_wan_parallel.py`` shows the
split transformer within ``atol = 1e-4`` of one process on decoded frames in [0, 1] (float32
rounding: each rank's kernels block their sums differently); the engine rounds those frames
to uint8, so a value near a rounding edge can land one level apart, and nothing more. A wrong
split is off by tens of levels.

diffusers' context-parallel set-up divides by the accelerator count, which is 0 on the CPU:
the ranks run ``tests.wan_tiny.cpu_context_parallel`` around ``enable_context_parallel`` through
a test-only ``sitecustomize.py`` (``cpu_context_parallel_environment``); the product has no
such hook.
"""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import psutil
import pytest

pytest.importorskip("torch", reason="the model extra (torch) is not installed")
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="finds the ranks in /proc")

from faceswap_cam.daemon.engine_host.address import (  # noqa: E402
    is_loopback_ip,
    parse_engine_url,
    parse_pairing_line,
)
from faceswap_cam.daemon.engine_host.child import TOKEN_ENV  # noqa: E402
from faceswap_cam.daemon.engine_host.proxy import EngineHostProxy  # noqa: E402
from tests.engine_host.helpers import gone, wait_for  # noqa: E402
from tests.wan_tiny import (  # noqa: E402
    HEIGHT,
    WIDTH,
    cpu_context_parallel_environment,
    save_tiny_wan_animate,
)

ENGINE_FLAGS = ["--engine", "wan-animate", "--mode", "animate", "--preprocessor", "stand-in",
                "--steps", "2", "--segment-frames", "5", "--carry", "1", "--seed", "4",
                "--prompt", "a person talking", "--gen-size", f"{WIDTH}x{HEIGHT}",
                "--device", "cpu", "--log-level", "WARNING"]
START_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 60.0
#: One batch of L = 5 frames, then two that continue the chain (L - P = 4).
BATCHES = (5, 4, 4)
MAX_LEVELS = 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan") / "tiny-wan-animate")


@pytest.fixture(scope="module")
def cpu_group_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return cpu_context_parallel_environment(tmp_path_factory.mktemp("site"))


def camera(count: int, start: int) -> list[np.ndarray]:
    scene = np.random.default_rng(5).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return [np.roll(scene, i, axis=1) for i in range(start, start + count)]


REFERENCE = np.random.default_rng(7).integers(0, 255, (80, 64, 3), dtype=np.uint8)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@contextmanager
def engine_host(tmp_path: Path, model: Path, *flags: str, env: dict[str, str] | None = None
                ) -> Iterator[tuple[EngineHostProxy, subprocess.Popen[str], Path]]:
    """``engine serve`` over a Unix socket (shared memory), as a daemon's child host, and a
    proxy connected to it with the reference set; the host is killed if the block fails."""
    tmp_path.mkdir(exist_ok=True)
    socket_path = tmp_path / "host.sock"
    log = tmp_path / "host.log"
    token = secrets.token_urlsafe(16)
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "faceswap_cam.daemon.cli", "engine", "serve", *ENGINE_FLAGS,
             "--wan-model", str(model), "--listen", f"unix:{socket_path}", *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", TOKEN_ENV: token, **(env or {})})
    try:
        url = _pairing_url(process, log)
        proxy = EngineHostProxy.connect(parse_engine_url(url), token,
                                        frame_size=(WIDTH, HEIGHT),
                                        call_timeout_s=CALL_TIMEOUT_S)
        proxy.set_reference(REFERENCE)
        yield proxy, process, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _pairing_url(process: subprocess.Popen[str], log: Path) -> str:
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        # The pairing line only: the ranks inherit the launcher's stdout, so reading to its end
        # would outlive the test wherever a rank outlives the launcher a moment.
        lines.put(stdout.readline())

    threading.Thread(target=read, daemon=True).start()
    try:
        line = lines.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        raise AssertionError(f"no pairing line within {START_TIMEOUT_S:g} s:\n"
                             f"{log.read_text()}") from None
    url = parse_pairing_line(line)
    assert url is not None, f"not a pairing line: {line!r}\n{log.read_text()}"
    return url


def swap_batches(proxy: EngineHostProxy) -> list[np.ndarray]:
    out, start = [], 0
    for count in BATCHES:
        frames = camera(count, start)
        result = proxy.process(frames)
        assert result.swapped
        assert not any(np.array_equal(o, f) for o, f in zip(result.frames, frames, strict=True))
        out += result.frames
        start += count
    return out


def test_two_cpu_ranks_give_the_single_process_frames_and_stop_as_a_group(
        tiny_model: Path, cpu_group_env: dict[str, str], tmp_path: Path) -> None:
    with engine_host(tmp_path / "one", tiny_model) as (proxy, _, _):
        assert (proxy.first_batch, proxy.next_batch) == (5, 4)
        expected = swap_batches(proxy)
        proxy.close()

    with engine_host(tmp_path / "two", tiny_model, "--gpus", "2",
                     env=cpu_group_env) as (proxy, launcher, log):
        ranks = children(launcher.pid)
        assert len(ranks) == 2, log.read_text()
        got = swap_batches(proxy)
        # torch's TCP store listened on every interface for the group's life: anyone on the
        # network could write into it. The group meets at a private file, its sockets on lo.
        listening = [connection.laddr for pid in (launcher.pid, *ranks)
                     for connection in psutil.Process(pid).net_connections("inet")
                     if connection.status == psutil.CONN_LISTEN]
        assert listening and all(is_loopback_ip(address.ip) for address in listening), \
            listening
        proxy.close()
        # As the daemon stops its child host: SIGTERM to the process it started.
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(15) == 0, log.read_text()
        wait_for(lambda: all(gone(rank) for rank in ranks), 5, "both ranks to exit")

    levels = max(int(np.abs(g.astype(int) - e.astype(int)).max())
                 for g, e in zip(got, expected, strict=True))
    print(f"max difference, 2 CPU ranks vs one process: {levels} of 255")
    assert len(got) == len(expected) == sum(BATCHES)
    assert levels <= MAX_LEVELS


def test_a_killed_launcher_takes_its_ranks_with_it(tiny_model: Path,
                                                   cpu_group_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    """As the daemon kills a hung child host: SIGKILL to the process it started. Each rank
    watches its launcher from its first moment, whatever its main thread is doing (here:
    loading, or joining the group)."""
    launcher = subprocess.Popen(
        [sys.executable, "-m", "faceswap_cam.daemon.cli", "engine", "serve", *ENGINE_FLAGS,
         "--wan-model", str(tiny_model), "--listen", f"unix:{tmp_path / 'host.sock'}",
         "--gpus", "2"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, **cpu_group_env})
    try:
        wait_for(lambda: len(children(launcher.pid)) == 2, 30, "two ranks")
        ranks = children(launcher.pid)
        launcher.kill()
        launcher.wait(5)
        # A rank still starting Python (seconds on a loaded two-core runner) watches its
        # launcher only once the CLI has imported.
        wait_for(lambda: all(gone(rank) for rank in ranks), 30, "both ranks to exit")
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def run_serve(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faceswap_cam.daemon.cli", "engine", "serve",
                           *flags], capture_output=True, text=True, timeout=60, check=False)


def test_gpus_says_what_it_needs_and_refuses_what_cannot_split() -> None:
    usage = run_serve("--help").stdout
    assert "--gpus N" in usage and "CUDA GPUs" in usage and "NCCL" in usage
    debug = run_serve("--engine", "debug", "--gpus", "2")
    assert debug.returncode == 2
    assert "engine debug runs on one device: --gpus 2 needs 2 CUDA GPUs" in debug.stderr
    offload = run_serve("--engine", "debug", "--gpus", "2", "--offload", "model")
    assert offload.returncode == 2 and "--offload does not combine with --gpus" in offload.stderr
    assert run_serve("--gpus", "0").returncode == 2


def test_rank_0_decides_who_is_in_view_for_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other ranks take rank 0's preprocessing, whatever frames they hold, so "nobody in
    view" (no segment generated) is one decision for the whole group."""
    from faceswap_cam.daemon.engine_host.distributed import (
        ReceivedPreprocessing,
        SharedPreprocessing,
    )
    from faceswap_cam.models.engine import EngineError
    from faceswap_cam.models.preprocessing.base import PreprocessedBatch
    from faceswap_cam.models.preprocessing.person import Box
    from faceswap_cam.models.wan import parallel

    sent: list[tuple[str, dict[str, object]]] = []

    def broadcast(context: object, method: str = "", args: tuple[object, ...] = (),
                  kwargs: dict[str, object] | None = None
                  ) -> tuple[str, tuple[object, ...], dict[str, object]]:
        if context == "rank 0":
            sent.append((method, dict(kwargs or {})))
        method, kwargs = sent[-1]
        return method, (), kwargs

    monkeypatch.setattr(parallel, "broadcast_call", broadcast)
    face = np.zeros((16, 16, 3), np.uint8)

    class Nobody:
        fail = False

        def locate(self, frames: object, **_: object) -> list[Box | None]:
            return [Box(1, 2, 3, 4), None]

        def process(self, frames: object, **_: object) -> PreprocessedBatch:
            if self.fail:
                raise RuntimeError("detector out of memory")
            return PreprocessedBatch(pose=[], face=[face], present=False)

        def reset(self) -> None:
            pass

    inner = Nobody()
    host = SharedPreprocessing(inner, cast(Any, "rank 0"))
    other = ReceivedPreprocessing(cast(Any, "rank 1"))
    size = (WIDTH, HEIGHT)
    # Every rank places the generation window around the people rank 0 found.
    assert host.locate(camera(5, 0), size=size) == other.locate(camera(5, 9), size=size) \
        == [Box(1, 2, 3, 4), None]
    assert not host.process(camera(5, 0), size=size, face_size=16,
                            with_background=False).present
    received = other.process(camera(5, 9), size=size, face_size=16, with_background=False)
    assert not received.present and received.pose == [] and received.face[0] is face
    inner.fail = True
    with pytest.raises(RuntimeError, match="out of memory"):
        host.process(camera(5, 0), size=size, face_size=16, with_background=False)
    with pytest.raises(EngineError, match="rank 0: preprocessing failed"):
        other.process(camera(5, 0), size=size, face_size=16, with_background=False)
