"""``faceswap-cam engine serve``: one engine behind a WebSocket, for one daemon at a time.

The engine is built before the host listens, so a host whose engine cannot load exits 1 with
the reason on stderr ("exits at start") and a listening host is a working one. Engine calls
run on one daemon thread, so the event loop keeps reading while a batch runs: ``interrupt``
arrives mid-call, a second client is told the host is busy, and a hung call never blocks exit.

Nothing a client sends names a file here: the reference arrives as PNG bytes and is decoded
with the daemon's own checks; shared memory is made by the host, under a name it picks (the
whole argument, and TLS with the pinned certificate: ``security.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import queue
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import numpy as np
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from faceswap_cam.daemon.engine_host import codec, protocol
from faceswap_cam.daemon.engine_host.address import ROUTE, Address, is_loopback_ip, pairing_line
from faceswap_cam.daemon.engine_host.child import TOKEN_ENV
from faceswap_cam.daemon.engine_host.protocol import (
    Error,
    Hello,
    Interrupt,
    Message,
    Ok,
    Process,
    ProtocolError,
    Reference,
    Reset,
    Result,
    Stage,
    Welcome,
)
from faceswap_cam.models.engine import (
    REFERENCE_FROM_CLIENT,
    EngineError,
    EngineInterrupted,
    SwapEngine,
    SwapResult,
    WritesIntoOutputs,
    check_box,
    create_engine,
    generation_window,
    resolve_engine_name,
)
from faceswap_cam.models.reference import PNG_MAGIC, ReferenceError, decode_reference

logger = logging.getLogger(__name__)

#: How long a client has to say hello.
HELLO_TIMEOUT_S = 10.0

# WebSocket close codes (RFC 6455).
CLOSE_PROTOCOL = 1002
CLOSE_POLICY = 1008
CLOSE_TRY_LATER = 1013


class HostStartError(RuntimeError):
    """The host cannot start; the message says why and what to do."""


class _EngineThread:
    """Runs engine calls one at a time on a daemon thread and hands results to the loop."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any],
                                            asyncio.Future[None]]] = queue.SimpleQueue()
        # Only whether the last call has finished, never its value: results a lost client
        # left behind (a batch of frames) are freed when the call ends, not at the next one.
        self._last: asyncio.Future[None] | None = None
        threading.Thread(target=self._loop, name="engine-calls", daemon=True).start()

    def _loop(self) -> None:
        while True:
            job, future, finished = self._jobs.get()
            loop = future.get_loop()
            try:
                value = job()
            except BaseException as exc:  # handed to the caller
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, value, None)
                del value
            loop.call_soon_threadsafe(_settle, finished, None, None)
            # A finished call keeps nothing alive here (its views of shared memory least).
            del job, future

    async def run(self, job: Callable[[], Any]) -> Any:
        await self.wait_idle()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._last = finished = loop.create_future()
        self._jobs.put((job, future, finished))
        # Shielded: a client that goes away cancels its wait, never the record of the call.
        return await asyncio.shield(future)

    async def wait_idle(self) -> None:
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([last])  # not ``await last``: a cancelled waiter cancels it


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class EngineHostServer:
    """The WebSocket application around one engine."""

    def __init__(self, engine: SwapEngine, engine_name: str, token: str, *,
                 shared_memory: bool) -> None:
        self.engine = engine
        self.engine_name = engine_name
        self._token = token
        self._shared_memory = shared_memory
        self._calls = _EngineThread()
        self._coder = codec.Coder()
        self._connected = False
        self.app = Starlette(routes=[WebSocketRoute(ROUTE, self._endpoint)])

    def close(self) -> None:
        self._coder.close()

    async def _endpoint(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            hello = await self._hello(ws)
        except WebSocketDisconnect:
            return
        if hello is None:
            return
        # Taken only once the token is checked: a client without it, or one that never says
        # hello, cannot keep the daemon out.
        if self._connected:
            await _refuse(ws, Error(message="busy: another daemon is connected to this engine "
                                    "host", fix="stop the other daemon first, or start another "
                                    "host for this one"), CLOSE_TRY_LATER)
            return
        self._connected = True
        shared: codec.SharedFrames | None = None
        try:
            # A call a lost client left running finishes first; then a fresh chain.
            self.engine.interrupt()
            await self._calls.wait_idle()
            await self._calls.run(self.engine.reset)
            # Room to stage the next batch while one is in flight.
            slots = 2 * max(self.engine.first_batch, self.engine.next_batch) + 1
            if self._shared_memory and hello.width and hello.height:
                try:
                    results = codec.SharedFrames.room_for(hello.width, hello.height, slots,
                                                          codec.RESULT_SLOTS)
                    if results is not None:
                        shared = codec.SharedFrames.create(hello.width, hello.height, slots,
                                                           results)
                except OSError as exc:  # its blocks could not be reserved
                    logger.debug("shared memory refused: %s", exc)
                if shared is None:
                    logger.warning("not enough room in /dev/shm for %d frames of %dx%d: "
                                   "frames go as JPEG", slots, hello.width, hello.height)
            staged = _StagedFrames(0 if shared is not None else slots, self._coder)
            await ws.send_bytes(protocol.encode(Welcome(
                protocol=protocol.PROTOCOL_VERSION, version=protocol.package_version(),
                engine=self.engine_name, first_batch=self.engine.first_batch,
                next_batch=self.engine.next_batch,
                shm=None if shared is None else shared.name,
                shm_inputs=0 if shared is None else shared.inputs,
                shm_results=0 if shared is None else shared.results,
                staged=staged.capacity, codec="jpeg" if shared is None else "shm")))
            await self._serve(ws, shared, staged)
        except WebSocketDisconnect:
            pass  # the client left; the next one is served
        finally:
            self._connected = False
            if shared is not None:
                shared.close()

    async def _hello(self, ws: WebSocket) -> Hello | None:
        try:
            data = await asyncio.wait_for(_receive(ws), HELLO_TIMEOUT_S)
            if data is None:
                return None
            header, _ = protocol.decode(data)
        except TimeoutError:
            await _refuse(ws, Error(message=f"no hello within {HELLO_TIMEOUT_S:g} s"),
                          CLOSE_POLICY)
            return None
        except ProtocolError as exc:
            await _refuse(ws, Error(message=str(exc)), CLOSE_PROTOCOL)
            return None
        if not isinstance(header, Hello):
            await _refuse(ws, Error(message=f"expected hello, got {header.type}"),
                          CLOSE_PROTOCOL)
            return None
        if header.protocol != protocol.PROTOCOL_VERSION:
            await _refuse(ws, Error(
                message=protocol.version_mismatch(header.protocol, header.version,
                                                  ours_are="engine host"),
                fix="install the same faceswap-cam version on the daemon and the host"),
                CLOSE_PROTOCOL)
            return None
        if not hmac.compare_digest(header.token.encode(), self._token.encode()):
            logger.warning("a client with a wrong token was refused")
            await _refuse(ws, Error(message="wrong token: pair again with the line `engine "
                                    "serve` prints", fix="run the line `faceswap-cam engine "
                                    "serve` printed on the host (faceswap-cam engine pair "
                                    "...) on the daemon's machine"), CLOSE_POLICY)
            return None
        return header

    async def _serve(self, ws: WebSocket, shared: codec.SharedFrames | None,
                     staged: _StagedFrames) -> None:
        pending: asyncio.Task[None] | None = None
        try:
            while True:
                data = await _receive(ws)
                if data is None:
                    return
                header, payload = protocol.decode(data)
                if isinstance(header, Interrupt):
                    self.engine.interrupt()
                    continue
                if isinstance(header, Stage):
                    staged.add(header, payload)
                    continue
                if pending is not None and not pending.done():
                    raise ProtocolError(f"{header.type} arrived while a request was running: "
                                        "send one request at a time")
                pending = asyncio.create_task(self._answer(ws, header, payload, shared,
                                                           staged))
        except ProtocolError as exc:
            logger.warning("refused a malformed message: %s", exc)
            await _refuse(ws, Error(message=str(exc)), CLOSE_PROTOCOL)
        finally:
            if pending is not None and not pending.done():
                self.engine.interrupt()  # nobody waits for this call any more
                pending.cancel()
            staged.clear()

    async def _answer(self, ws: WebSocket, header: Message, payload: memoryview,
                      shared: codec.SharedFrames | None, staged: _StagedFrames) -> None:
        try:
            reply, body = await self._dispatch(header, payload, shared, staged)
        except ProtocolError as exc:
            logger.warning("refused a malformed request: %s", exc)
            await _refuse(ws, Error(message=str(exc)), CLOSE_PROTOCOL)
            return
        except ReferenceError as exc:
            reply, body = Error(message=str(exc), fix="use another reference image"), b""
        except EngineInterrupted as exc:  # its result is no longer wanted: not a failure
            logger.info("engine call interrupted: %s", exc)
            reply, body = Error(message=f"{self.engine_name} on the host: {exc}",
                                interrupted=True), b""
        except EngineError as exc:  # a failure the engine explains
            logger.warning("engine call failed: %s", exc)
            reply, body = Error(message=f"{self.engine_name} failed on the host: {exc}",
                                fix="see the engine host's log"), b""
        except Exception as exc:
            logger.warning("engine call failed: %s", exc, exc_info=True)
            reply, body = Error(message=f"{self.engine_name} failed on the host: {exc}",
                                fix="see the engine host's log"), b""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await ws.send_bytes(protocol.encode(reply, body))

    async def _dispatch(self, header: Message, payload: memoryview,
                        shared: codec.SharedFrames | None,
                        staged: _StagedFrames) -> tuple[Message, bytes]:
        engine = self.engine
        if isinstance(header, Reference):
            if payload[:len(PNG_MAGIC)] != PNG_MAGIC:
                # PNG only, as the daemon sends it: its decoding is bounded by the size its
                # header gives, which a progressive JPEG's (any number of scans) is not.
                raise ReferenceError("the reference image cannot be decoded as an image: it "
                                     "must arrive as PNG, as faceswap-cam sends it")
            # Off the loop: a large PNG takes a while, and a second client's refusal or an
            # interrupt must not wait for it.
            image = await asyncio.to_thread(decode_reference, bytes(payload))
            await self._calls.run(lambda: engine.set_reference(image))
            return Ok(), b""
        if isinstance(header, Reset):
            await self._calls.run(engine.reset)
            return Ok(), b""
        if not isinstance(header, Process):
            raise ProtocolError(f"unexpected {header.type} from a client")
        # The engine takes batches of these sizes and no more; with the frame size's bound
        # this bounds the memory one batch can make the host use.
        most = max(engine.first_batch, engine.next_batch)
        if header.count > most:
            raise ProtocolError(f"a batch of {header.count} frames: {self.engine_name} takes "
                                f"at most {most}")
        if header.codec == "shm":
            if shared is None:
                raise ProtocolError("no shared memory on this connection: send JPEG")
            if len(payload):
                raise ProtocolError("a shared-memory batch carries no payload")
            slots, into = header.slots, header.results
            if not shared.fits(header.count, header.width, header.height) or slots is None \
                    or len(slots) != header.count \
                    or (into is not None and len(into) != header.count):
                raise ProtocolError(f"a batch of {header.count} frames of {header.width}x"
                                    f"{header.height} does not match this connection's "
                                    "shared memory and slots")
            inputs = shared.input_views(slots)
            swapped = await self._calls.run(
                lambda: _swap_in_place(engine, inputs, shared, slots, into))
            return Result(swapped=swapped, count=header.count, codec="shm",
                          window=_window(engine) if swapped else None), b""
        if header.slots is not None or header.results is not None:
            raise ProtocolError("slots are for shared-memory batches")
        if header.staged is not None:
            if len(header.staged) != header.count or len(payload):
                raise ProtocolError("a staged batch names each of its frames, and only them")
            frames = await staged.take(header.staged, header.width, header.height)
        else:
            frames = await asyncio.to_thread(codec.decode_jpeg, payload,
                                             [(header.width, header.height)] * header.count,
                                             self._coder)
        result = await self._calls.run(lambda: engine.process(frames))
        _check_result(result, frames)
        if not result.swapped:
            return Result(swapped=False, count=header.count, codec=header.codec), b""
        # Only what changed goes back: a swapped person's box is a fraction of a 720p frame,
        # and the client has the rest already (without the JPEG loss, too).
        boxes = result.boxes()
        body = await asyncio.to_thread(codec.encode_boxes, result.frames, boxes, self._coder)
        return Result(swapped=True, count=header.count, codec=header.codec,
                      boxes=boxes, window=_window(engine)), body


def _window(engine: SwapEngine) -> protocol.Window | None:
    # One the protocol cannot hold (an empty debug box) is left out; the batch stands.
    window = generation_window(engine)
    return None if window is None else protocol.window_or_none(window)


def _swap_in_place(engine: SwapEngine, inputs: list[np.ndarray], shared: codec.SharedFrames,
                   slots: list[int], into: list[int] | None) -> bool:
    """A shared-memory batch, all on the engine thread: the engine reads the slots (no copy
    of its inputs) and its results go into the result slots (or over the inputs) before the
    loop answers."""
    if into is not None and isinstance(engine, WritesIntoOutputs):
        return bool(engine.process_into(inputs, shared.result_views(into)))
    result = engine.process(inputs)
    _check_result(result, inputs)
    if result.swapped:
        shared.write_results(result.frames, slots, into)
    return result.swapped


class _StagedFrames:
    """The frames a JPEG client sent ahead, by id: the newest ``capacity``, each decoded on
    a worker thread as it arrives, so a batch finds its frames decoded (or nearly)."""

    def __init__(self, capacity: int, coder: codec.Coder) -> None:
        self.capacity = capacity
        self._coder = coder
        self._frames: OrderedDict[int, asyncio.Future[list[np.ndarray]]] = OrderedDict()
        # Every decode not finished, also of frames replaced or pushed out since: those
        # still hold their payload and a worker thread.
        self._decoding: set[asyncio.Future[list[np.ndarray]]] = set()

    def add(self, header: Stage, payload: memoryview) -> None:
        if not self.capacity:
            raise ProtocolError("frames are staged only on JPEG connections")
        if len(self._decoding) >= self.capacity:
            # Bounded work: a client staging faster than frames decode is not a camera.
            raise ProtocolError(f"more than {self.capacity} staged frames waiting to decode")
        # The payload is one JPEG of the size named, read from its header now: anything
        # else is refused before it takes a thread or stays in memory.
        codec.split_jpeg(payload, [(header.width, header.height)])
        decoding = asyncio.ensure_future(asyncio.to_thread(
            codec.decode_jpeg, payload, [(header.width, header.height)], self._coder))
        self._decoding.add(decoding)
        decoding.add_done_callback(self._decoded)
        self._frames.pop(header.id, None)
        self._frames[header.id] = decoding
        while len(self._frames) > self.capacity:
            self._frames.popitem(last=False)

    async def take(self, ids: list[int], width: int, height: int) -> list[np.ndarray]:
        missing = [frame_id for frame_id in ids if frame_id not in self._frames]
        if missing:
            raise ProtocolError(f"frames {missing[:4]} were not staged (the host keeps the "
                                f"newest {self.capacity})")
        # Held now: frames staged while these decode may push them out of the newest.
        decodings = [self._frames[frame_id] for frame_id in ids]
        frames = []
        for frame_id, decoding in zip(ids, decodings, strict=True):
            (frame,) = await decoding
            if frame.shape != (height, width, 3):
                raise ProtocolError(f"staged frame {frame_id} is not {width}x{height}")
            frames.append(frame)
        return frames

    def clear(self) -> None:
        """The client left: its frames are dropped, and decodes not yet started with them."""
        for decoding in self._decoding:
            decoding.cancel()
        self._frames.clear()

    def _decoded(self, decoding: asyncio.Future[list[np.ndarray]]) -> None:
        self._decoding.discard(decoding)
        # A frame never asked for fails nowhere else: read its error here.
        if not decoding.cancelled() and decoding.exception() is not None:
            logger.debug("a staged frame did not decode: %s", decoding.exception())


def _check_result(result: object, frames: list[np.ndarray]) -> None:
    if not isinstance(result, SwapResult) or len(result.frames) != len(frames) or any(
            not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != inp.shape
            for out, inp in zip(result.frames, frames, strict=False)):
        raise RuntimeError("the engine returned frames that do not match its batch")
    if result.changed is not None:
        if len(result.changed) != len(frames):
            raise RuntimeError(f"the engine returned {len(result.changed)} changed boxes "
                               f"for {len(frames)} frames")
        height, width = frames[0].shape[:2]
        for box in result.changed:
            try:
                check_box(box, width, height)
            except ValueError as exc:  # the engine's fault, not the client's
                raise RuntimeError(f"the engine returned a bad box: {exc}") from None


async def _receive(ws: WebSocket) -> bytes | None:
    """The next binary message, None when the client left; a text message is refused."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    data = message.get("bytes")
    if data is None:
        raise ProtocolError("text message: this host speaks binary messages only")
    return bytes(data)


async def _refuse(ws: WebSocket, error: Error, code: int) -> None:
    """Say why, then close: the host goes on serving the next client."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        if ws.application_state is WebSocketState.CONNECTED:
            await ws.send_bytes(protocol.encode(error))
            await ws.close(code, error.message[:120])


# --- the listener (the seam where TLS plugs in) -------------------------------------------


def open_listener(address: Address, ssl_context: ssl.SSLContext | None) -> socket.socket:
    """Bind and listen: loopback or a Unix socket as is; any other address only with TLS
    (then the token and the pinned certificate protect the frames on the network)."""
    if not address.is_loopback and ssl_context is None:
        raise HostStartError(f"refusing to listen on {address.host}: a non-loopback listener "
                             "needs TLS and a token (listen on 127.0.0.1 and use an SSH "
                             "tunnel meanwhile)")
    try:
        if address.path is not None:
            with _private_umask():
                if os.path.exists(address.path):
                    os.unlink(address.path)  # a socket left by a killed host
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(address.path)
            sock.listen(8)
            return sock
        sock = socket.create_server((address.host or "127.0.0.1", address.port),
                                    family=socket.AF_INET6 if ":" in (address.host or "")
                                    else socket.AF_INET)
    except OSError as exc:
        raise HostStartError(f"cannot listen on {address.url()}: {exc.strerror or exc}") \
            from exc
    bound = str(sock.getsockname()[0])
    if ssl_context is None and not is_loopback_ip(bound):
        # A name is resolved again by the bind: "localhost" mapped elsewhere since the check
        # above would serve the token in the clear on the network.
        sock.close()
        raise HostStartError(f"refusing to listen on {address.host}: it is {bound} here, not "
                             "loopback, and a non-loopback listener needs TLS and a token")
    return sock


class _private_umask:
    """A Unix socket is created 0600: only this user can connect."""

    def __enter__(self) -> None:
        self._old = os.umask(0o177)

    def __exit__(self, *exc: object) -> None:
        os.umask(self._old)


def make_server(app: Any, ssl_context: ssl.SSLContext | None) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(
        app, http=_upgrade_in_time(), ws="websockets-sansio",
        # A daemon never asks for per-message deflate (JPEG and raw frames do not deflate),
        # and granting it to anyone else lets 64 KB on the wire inflate to MAX_MESSAGE_BYTES
        # in the host, a message at a time, before any header is read.
        ws_max_size=protocol.MAX_MESSAGE_BYTES, ws_per_message_deflate=False,
        lifespan="off", log_config=None, log_level="warning", access_log=False,
        timeout_graceful_shutdown=2,
        ssl_context_factory=None if ssl_context is None
        else (lambda _config, _default: ssl_context)))


def _upgrade_in_time() -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 with a deadline for the WebSocket upgrade.

    uvicorn times an idle connection out only after its first request, so one that sends
    nothing, or half a request line, is held for good: over TLS past its handshake, too, so
    anyone on the network could fill the host's file descriptors. A connection still not
    upgraded after ``HELLO_TIMEOUT_S`` is closed (a daemon upgrades at once)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class UpgradeInTime(H11Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._upgrade_deadline = asyncio.get_running_loop().call_later(
                HELLO_TIMEOUT_S, _close_unless_upgraded, transport, self)

        def connection_lost(self, exc: Exception | None) -> None:
            self._upgrade_deadline.cancel()
            super().connection_lost(exc)

    return UpgradeInTime


def _close_unless_upgraded(transport: asyncio.BaseTransport, http: asyncio.Protocol) -> None:
    # The upgrade hands the transport to the WebSocket protocol, which keeps it.
    if transport.get_protocol() is http:
        transport.close()


def listening_address(sock: socket.socket, address: Address) -> Address:
    """The address actually bound (port 0 picks one)."""
    if address.path is not None:
        return address
    host, port = sock.getsockname()[:2]
    return Address(host=address.host or host, port=port)


# --- the command ---------------------------------------------------------------------------


def serve(engine_name: str, options: dict[str, Any], listen: Address, *,
          exit_with_parent: int | None = None,
          ssl_context: ssl.SSLContext | None = None, token: str | None = None,
          fingerprint: str | None = None,
          engine_factory: Callable[[str, dict[str, Any]], SwapEngine] | None = None) -> int:
    """Build the engine, listen, print the pairing line, serve until SIGINT/SIGTERM.

    ``engine_factory(name, options)`` builds the engine instead of the registry (rank 0 of
    ``--gpus N``: see ``distributed.py``).

    ``token``: the host's kept token (a TLS host's, see ``security.host_identity``); else a
    child's from its parent, else a fresh one. ``fingerprint``: its certificate's, for the
    pairing line."""
    with sigterm_unwinds():
        given_token = os.environ.pop(TOKEN_ENV, "")
        token = given_token or token or secrets.token_urlsafe(32)
        try:
            if not listen.is_loopback and ssl_context is None:
                open_listener(listen, ssl_context)  # refuses before a long engine load
            # The daemon sends its reference over the wire: none is needed to start.
            name = resolve_engine_name(engine_name, {**options, REFERENCE_FROM_CLIENT: True})
            engine = (create_engine(name, **options) if engine_factory is None
                      else engine_factory(name, options))
        except HostStartError as exc:
            _say(sys.stderr, f"faceswap-cam: engine host cannot start: {exc}")
            return 2
        except Exception as exc:
            _say(sys.stderr, f"faceswap-cam: engine host cannot start: {exc}")
            return 1
        try:
            try:
                sock = open_listener(listen, ssl_context)
            except HostStartError as exc:
                _say(sys.stderr, f"faceswap-cam: engine host cannot start: {exc}")
                return 1
            bound = listening_address(sock, listen)
            host = EngineHostServer(engine, name, token, shared_memory=bound.is_unix)
            try:
                server = make_server(host.app, ssl_context)
                if exit_with_parent is not None:
                    _exit_with_parent(exit_with_parent, server)
                logger.info("engine host for %s at %s (pid %d)", name, bound.url(), os.getpid())
                # The pairing line is the last line on stdout; a child's token is its parent's.
                _say(sys.stdout, pairing_line(bound.reachable().url(
                    token=None if given_token else token, fingerprint=fingerprint)))
                server.run(sockets=[sock])
            finally:
                host.close()
        finally:
            engine.close()
            if listen.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(listen.path)
        return 0


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """In the main thread, SIGTERM unwinds the block (:func:`exit_in_order`) and the handler
    before it is put back after: a host's ``finally`` closes its engine and removes its socket
    whenever the signal comes (uvicorn too hands SIGTERM back to this handler once it has
    stopped serving, where the default action would end the process on the spot), and an
    in-process host leaves its caller's handler as it found it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, exit_in_order)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(run: Callable[[], int]) -> int:
    """``run()``'s exit status, also where a SIGTERM (:func:`exit_in_order`, after an orderly
    close) or a Ctrl-C (the shell's 128 + SIGINT) ends it."""
    try:
        return run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130


def exit_now(code: int) -> NoReturn:
    """End a host process once its engine is closed and its socket removed, without tearing
    down the interpreter: collecting torch's and diffusers' module graph takes seconds more
    (2.3 s for an idle host on a 2-core machine), which a daemon stopping or restarting its
    host waits for (3 s, then SIGKILL), as a ``--gpus N`` launcher waits for its ranks."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_in_order(_signum: int, _frame: object) -> None:
    """A SIGTERM handler that unwinds (closing what ``finally`` closes) instead of dying."""
    raise SystemExit(0)


def _say(stream: Any, line: str) -> None:
    """The command's own output (the pairing line, the reason it cannot start), not a log."""
    stream.write(line + "\n")
    stream.flush()


def _exit_with_parent(parent: int, server: Any) -> None:
    """A child host must not outlive its daemon (even a ``kill -9``'d one)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        logger.warning("the daemon (pid %d) is gone: stopping", parent)
        server.should_exit = True
        time.sleep(5.0)
        os._exit(1)  # a call that will not end must not keep the GPU

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
