"""``faceswap-cam engine serve --gpus N``: one Wan-Animate engine over N GPUs of this machine.

The process that is started (by a person, or by the daemon as its child host) is the
*launcher*. It imports no torch: it starts N *rank* processes, ``engine serve ... --group-rank``
with torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``; rank 0 is handed the store's socket, see ``STORE_FD_ENV``), and supervises
them as one group:

* the ranks share its stdout and stderr, so rank 0's pairing line is the group's, and a rank
  that cannot start says why where the daemon reads it;
* when any rank ends, the group ends (the others cannot go on without it): rank 0 is asked to
  stop (SIGTERM: it finishes serving and stops the other ranks in order), anything left after
  a grace period is killed, and the launcher exits with the first rank's status;
* SIGTERM or SIGINT to the launcher, or the end of the daemon it was started for, stop the
  group the same way; a ``kill -9`` of the launcher ends every rank within a second (each
  rank watches its parent), so killing the launcher's pid is enough to free the GPUs.

Every rank loads the whole model on its GPU and joins :mod:`faceswap_cam.models.wan.parallel`
(Ulysses context parallelism in the transformer). Rank 0 serves the RPC through the ordinary
host (:func:`faceswap_cam.daemon.engine_host.host.serve`) with a :class:`DistributedEngine`,
which hands every call to all ranks; the other ranks only follow. Rank 0 alone runs the
preprocessing (person detection, pose, masks) and hands its result to the others, so every
rank agrees on "nobody in view" (a rank that skipped a segment the others generate would
leave them waiting in a collective) and the other GPUs do not hold the preprocessing models.

The ranks can also be started by ``torchrun --nproc-per-node N -m faceswap_cam.daemon.cli
engine serve --gpus N --group-rank ...``; then torchrun supervises them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from faceswap_cam.daemon.engine_host.child import OPTIONS_ENV, TOKEN_ENV
from faceswap_cam.daemon.engine_host.host import exit_code, exit_now, sigterm_unwinds
from faceswap_cam.models.engine import (
    REFERENCE_FROM_CLIENT,
    EngineError,
    GenerationWindow,
    SwapEngine,
    SwapResult,
    resolve_engine_name,
)

if TYPE_CHECKING:
    from faceswap_cam.models.preprocessing.base import PreprocessedBatch, Preprocessor, Window
    from faceswap_cam.models.preprocessing.person import Box
    from faceswap_cam.models.wan.engine import WanAnimateEngine
    from faceswap_cam.models.wan.parallel import ContextParallel, RankContext

logger = logging.getLogger(__name__)

#: The hidden ``engine serve`` flag that makes a process a rank instead of a launcher.
RANK_FLAG = "--group-rank"
#: The only engine that splits over GPUs.
ENGINE = "wan-animate"
#: How long rank 0 may take to stop the group in order before every rank is killed.
GRACE_S = 10.0
#: How long closing waits for a running call to give up after it was interrupted.
CLOSE_WAIT_S = 10.0
_POLL_S = 0.1
#: The group's store socket, bound to loopback by the launcher and handed to rank 0 (the
#: other ranks get it empty): torch's TCP store binds every interface when it makes its own,
#: for the group's whole life, and anyone on the network could write into it. Unset
#: (torchrun): torch makes its own.
STORE_FD_ENV = "FACESWAP_CAM_STORE_FD"
#: The ranks' own sockets (gloo's pairs, NCCL's bootstrap) on loopback too, unless the user
#: named an interface: the group is on this machine.
_LOOPBACK = {"linux": "lo", "darwin": "lo0"}
_PEOPLE, _BATCH, _FAILED = "located", "preprocessed", "preprocessing failed"

EngineBuilder = Callable[[str, dict[str, Any]], SwapEngine]


def requirements(gpus: int, flag: str = "--gpus") -> str:
    """What ``--gpus N`` needs (or the daemon's ``flag`` for it), for the help and the
    errors."""
    return (f"{flag} {gpus} needs {gpus} CUDA GPUs on this machine (the first {gpus} that "
            "CUDA_VISIBLE_DEVICES shows) and torch with NCCL, and runs only the wan-animate "
            "engine")


# --- the launcher (no torch here) -------------------------------------------------------------

def group_problem(gpus: int, engine: str, options: dict[str, Any],
                  flag: str = "--gpus") -> str | None:
    """Why these options cannot run as a group, before any rank is started; None if they can.
    ``flag``: the option that asked for the group, as the user typed it."""
    if options.get("offload", "none") != "none":
        return (f"--offload does not combine with {flag}: context parallelism keeps the whole "
                "model on every GPU")
    device = str(options.get("device", "auto"))
    if device not in ("auto", "cuda", "cpu"):
        return (f"--device {device} does not combine with {flag}: rank N runs on cuda:N (choose "
                "the GPUs with CUDA_VISIBLE_DEVICES)")
    # The daemon sends its reference over the wire: none is needed to start.
    name = resolve_engine_name(engine, {**options, REFERENCE_FROM_CLIENT: True})
    if name != ENGINE:
        return f"engine {name} runs on one device: {requirements(gpus, flag)}"
    return None


def launch(gpus: int, argv: Sequence[str], engine: str, options: dict[str, Any], *,
           exit_with_parent: int | None = None, grace_s: float = GRACE_S) -> int:
    """Start ``gpus`` ranks of ``faceswap-cam ARGV`` and supervise them until the group ends.

    ``argv`` is this process's own command line (``engine serve ...``); every rank gets the
    same ``options`` (the launcher resolved them once) and only rank 0 gets the token.
    """
    try:
        problem = group_problem(gpus, engine, options)
    except EngineError as exc:
        _say(f"faceswap-cam: engine host cannot start: {exc}")
        return 1
    if problem is not None:
        _say(f"faceswap-cam: engine host cannot start: {problem}")
        return 2
    token = os.environ.pop(TOKEN_ENV, "")
    store = socket.create_server(("127.0.0.1", 0))
    environment = {**os.environ, OPTIONS_ENV: json.dumps(options), "WORLD_SIZE": str(gpus),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.getsockname()[1])}
    loopback = _LOOPBACK.get(sys.platform)
    if loopback:
        for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            environment.setdefault(name, loopback)
    # The last --exit-with-parent wins: each rank watches this launcher, not the daemon.
    command = [sys.executable, "-m", "faceswap_cam.daemon.cli", *argv,
               "--exit-with-parent", str(os.getpid()), RANK_FLAG]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    if exit_with_parent is not None:
        _watch_parent(exit_with_parent, stop.set)
    ranks: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(gpus):
            env = {**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            if rank == 0 and token:
                env[TOKEN_ENV] = token
            if sys.platform != "win32":  # no fd passing there: torch binds its own
                env[STORE_FD_ENV] = str(store.fileno()) if rank == 0 else ""
            ranks.append(subprocess.Popen(
                command, stdin=subprocess.DEVNULL, env=env,
                pass_fds=(store.fileno(),) if env.get(STORE_FD_ENV) else ()))
        logger.info("engine host over %d GPUs: ranks %s", gpus,
                    ", ".join(str(p.pid) for p in ranks))
        store.close()  # rank 0 holds it now
        return _supervise(ranks, stop, grace_s)
    finally:
        store.close()
        for process in ranks:  # only after an error in here: _supervise reaps them all
            if process.poll() is None:
                process.kill()
                process.wait()


def _supervise(ranks: list[subprocess.Popen[bytes]], stop: threading.Event,
               grace_s: float) -> int:
    while not stop.is_set() and all(p.poll() is None for p in ranks):
        stop.wait(_POLL_S)
    ended = [(rank, p.returncode) for rank, p in enumerate(ranks) if p.returncode is not None]
    if ended and not stop.is_set():
        rank, code = ended[0]
        log = logger.info if code == 0 and rank == 0 else logger.warning
        log("engine host rank %d ended (%s): stopping the group", rank, _describe(code))
    host = ranks[0]
    if host.poll() is None:
        host.send_signal(signal.SIGTERM)  # rank 0 stops serving and stops the others in order
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in ranks) and time.monotonic() < deadline:
            time.sleep(_POLL_S / 2)
    for process in ranks:  # without rank 0, nothing can stop them in order
        if process.poll() is None:
            process.kill()
    for process in ranks:
        process.wait()
    code = ended[0][1] if ended and not stop.is_set() else host.returncode
    return code if code >= 0 else 128 - code


def _describe(code: int) -> str:
    return f"exit code {code}" if code >= 0 else f"signal {-code}"


def _watch_parent(parent: int, gone: Callable[[], None]) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        logger.warning("the process that started this one (pid %d) is gone: stopping", parent)
        gone()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _say(line: str) -> None:
    """The command's own output (why it cannot start), not a log line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# --- a rank -----------------------------------------------------------------------------------

def run_rank(gpus: int, options: dict[str, Any],
             serve_host: Callable[[EngineBuilder], int] | None, *,
             exit_with_parent: int | None = None) -> NoReturn:
    """Be one rank of the group, then end the process: rank 0 runs ``serve_host`` (the engine
    host, given the engine builder to use), the others (``serve_host`` None) follow rank 0's
    calls until it stops them.

    The process ends by ``os._exit`` once the group is shut down: nothing is left to save, and
    the interpreter's teardown of torch takes seconds that the launcher's grace period (and a
    daemon waiting for its host) should not spend. It also ends at once when
    ``exit_with_parent`` (the launcher) is gone, whatever it is doing: the group cannot go on
    without its launcher, and the GPU must be freed.
    """
    if exit_with_parent is not None:
        _watch_parent(exit_with_parent, lambda: os._exit(1))
    code = 1
    try:
        # A SIGTERM: rank 0 asked to stop, after an orderly close.
        code = exit_code(lambda: _rank(gpus, options, serve_host))
    except BaseException:
        traceback.print_exc()
    finally:
        exit_now(code)


def _rank(gpus: int, options: dict[str, Any],
          serve_host: Callable[[EngineBuilder], int] | None) -> int:
    from faceswap_cam.models.wan import parallel

    device = "cpu" if options.get("device") == "cpu" else "cuda"
    try:
        handed = os.environ.get(STORE_FD_ENV)  # the launcher's ranks; the fd, rank 0's
        context = parallel.init_distributed(device, own_store=handed is not None,
                                            store_listen_fd=int(handed) if handed else None)
    except (RuntimeError, ValueError) as exc:
        _say(f"faceswap-cam: engine host cannot start: {requirements(gpus)}: {exc}")
        return 1
    try:
        if context.world_size != gpus:
            _say(f"faceswap-cam: engine host cannot start: --gpus {gpus}, but the group has "
                 f"{context.world_size} ranks")
            return 2
        if context.is_host:
            if serve_host is None:
                raise RuntimeError("rank 0 serves the engine host: give it serve_host")
            # uvicorn hands a SIGTERM back to the default action once it stopped serving,
            # which would end this process before the engine is closed: end it by
            # SystemExit instead, so the close stops the other ranks in order.
            with sigterm_unwinds():
                return serve_host(lambda name, opts: _host_engine(context, name, opts))
        return _follow(context, options)
    finally:
        parallel.shutdown_distributed()


def _host_engine(context: RankContext, name: str, options: dict[str, Any]) -> SwapEngine:
    if name != ENGINE:
        raise EngineError(f"engine {name} runs on one device: {requirements(context.world_size)}")
    engine, handle = build_rank_engine(context, options)
    return DistributedEngine(context, engine, handle)


def _follow(context: RankContext, options: dict[str, Any]) -> int:
    from faceswap_cam.models.wan import parallel

    # A Ctrl-C in the terminal reaches the whole group: rank 0 stops the others in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine, _ = build_rank_engine(context, options)
    except Exception as exc:
        _say(f"faceswap-cam: engine host cannot start (rank {context.rank}): {exc}")
        return 1
    try:
        parallel.serve_other_ranks(context, engine)
    except RuntimeError as exc:  # gloo/NCCL: rank 0 is gone without stopping this one
        logger.warning("rank %d: lost rank 0, stopping: %s", context.rank, exc)
        return 1
    finally:
        engine.close()
    return 0


def build_rank_engine(context: RankContext, options: dict[str, Any]
                      ) -> tuple[WanAnimateEngine, ContextParallel]:
    """This rank's Wan-Animate engine on its device, its transformer split over the group.

    Every rank: loaded, attention backend set, then split, then compiled (a compiled
    transformer could not be split any more). Only rank 0 loads the preprocessing models.
    """
    from faceswap_cam.models.wan import engine as wan_engine
    from faceswap_cam.models.wan import parallel

    local = {**options, "device": str(context.device), "compile": False}
    if not context.is_host:
        local["preprocessor"] = "stand-in"  # replaced by rank 0's results below
    engine = wan_engine.create(**local)
    try:
        handle = parallel.enable_context_parallel(engine.pipe.transformer, context)
    except (RuntimeError, ValueError) as exc:
        engine.close()
        raise EngineError(f"cannot split Wan-Animate over {context.world_size} GPUs: {exc}") \
            from exc
    if options.get("compile"):
        engine.pipe.transformer.compile_repeated_blocks(fullgraph=True)
    engine.preprocessor = (SharedPreprocessing(engine.preprocessor, context) if context.is_host
                           else ReceivedPreprocessing(context))
    return engine, handle


class SharedPreprocessing:
    """Rank 0's preprocessor: its results (or its failure) go to every other rank, so every
    rank places the same generation window and conditions on the same batch."""

    def __init__(self, inner: Preprocessor, context: RankContext) -> None:
        self.inner = inner
        self._context = context

    def _share(self, make: Callable[[], Any], tag: str, payload: Callable[[Any], Any]) -> Any:
        from faceswap_cam.models.wan import parallel

        try:
            result = make()
        except Exception:
            parallel.broadcast_call(self._context, _FAILED)  # the others must not wait for it
            raise
        parallel.broadcast_call(self._context, tag, (), {"value": payload(result)})
        return result

    def locate(self, frames: Sequence[np.ndarray], *, size: tuple[int, int]
               ) -> list[Box | None]:
        located: list[Box | None] = self._share(lambda: self.inner.locate(frames, size=size),
                                                _PEOPLE, lambda boxes: boxes)
        return located

    def process(self, frames: Sequence[np.ndarray], *, size: tuple[int, int], face_size: int,
                with_background: bool, window: Window | None = None,
                people: Sequence[Box | None] | None = None) -> PreprocessedBatch:
        batch: PreprocessedBatch = self._share(
            lambda: self.inner.process(frames, size=size, face_size=face_size,
                                       with_background=with_background, window=window,
                                       people=people),
            _BATCH, lambda made: {"pose": made.pose, "face": made.face,
                                  "background": made.background, "mask": made.mask,
                                  "present": made.present})
        return batch

    def reset(self) -> None:
        self.inner.reset()


class ReceivedPreprocessing:
    """Ranks 1..N-1: what rank 0 located and preprocessed, whatever frames this rank was
    given."""

    def __init__(self, context: RankContext) -> None:
        self._context = context

    def _receive(self, expected: str) -> Any:
        from faceswap_cam.models.wan import parallel

        tag, _, payload = parallel.broadcast_call(self._context)
        if tag != expected:
            raise EngineError(f"rank 0: {tag}")
        return payload["value"]

    def locate(self, frames: Sequence[np.ndarray], *, size: tuple[int, int]
               ) -> list[Box | None]:
        located: list[Box | None] = self._receive(_PEOPLE)
        return located

    def process(self, frames: Sequence[np.ndarray], *, size: tuple[int, int], face_size: int,
                with_background: bool, window: Window | None = None,
                people: Sequence[Box | None] | None = None) -> PreprocessedBatch:
        from faceswap_cam.models.preprocessing.base import PreprocessedBatch

        return PreprocessedBatch(**self._receive(_BATCH))

    def reset(self) -> None:
        pass  # rank 0's preprocessor holds the temporal state


class DistributedEngine:
    """Rank 0's :class:`~faceswap_cam.models.engine.SwapEngine`: every call runs on every rank
    (:func:`~faceswap_cam.models.wan.parallel.run_on_all_ranks`), rank 0's result answers.

    ``interrupt()`` stops every rank at the same denoising step (stopping rank 0 alone would
    leave the others waiting in a collective); like any engine's, it holds until ``reset()``.
    """

    def __init__(self, context: RankContext, engine: WanAnimateEngine,
                 handle: ContextParallel) -> None:
        self.first_batch = engine.first_batch
        self.next_batch = engine.next_batch
        self._context = context
        self._engine = engine
        self._handle = handle
        # One call at a time reaches the ranks, and close() never broadcasts into a call.
        self._lock = threading.Lock()
        self._closed = False

    def _call(self, method: str, *args: Any) -> Any:
        from faceswap_cam.models.wan import parallel

        with self._lock:
            if self._closed:
                raise EngineError("the engine is closed")
            return parallel.run_on_all_ranks(self._context, self._engine, method, *args)

    def set_reference(self, image: np.ndarray) -> None:
        self._call("set_reference", image)

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        result: SwapResult = self._call("process", list(frames))
        return result

    @property
    def generation_window(self) -> GenerationWindow | None:
        return self._engine.generation_window  # rank 0's, where the host runs

    def reset(self) -> None:
        self._handle.clear_stop()
        self._call("reset")

    def interrupt(self) -> None:
        self._handle.request_stop()

    def close(self) -> None:
        """Stop the other ranks and drop the models; idempotent. A call that does not give up
        within :data:`CLOSE_WAIT_S` is left to the launcher, which kills the group."""
        from faceswap_cam.models.wan import parallel

        self._handle.request_stop()
        if not self._lock.acquire(timeout=CLOSE_WAIT_S):
            logger.warning("a call is still running on the ranks: leaving them to be killed")
            return
        try:
            if self._closed:
                return
            self._closed = True
            try:
                parallel.stop_other_ranks(self._context)
            except Exception as exc:  # a rank already gone: the launcher ends the rest
                logger.warning("could not stop the other ranks in order: %s", exc)
            self._engine.close()
        finally:
            self._lock.release()
