"""The daemon's side of an engine host: a :class:`SwapEngine` that forwards every call.

The processor sees just another engine. Every receive has a timeout, and a connection that
closes or breaks makes the call raise, so the processor drops this engine and starts another
with its usual backoff. ``interrupt()`` may come from any thread while ``process`` waits.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from faceswap_cam.daemon.engine_host import codec, protocol
from faceswap_cam.daemon.engine_host.address import EngineUrl
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
    EngineError,
    EngineInterrupted,
    EngineLost,
    GenerationWindow,
    SwapResult,
)

logger = logging.getLogger(__name__)

#: Answers to hello, reference and reset come quickly on a healthy host (a welcome waits
#: for a call a lost daemon left running, seconds on a real engine).
CONTROL_TIMEOUT_S = 30.0
#: TCP, TLS and the WebSocket upgrade: a host that is up answers them at once. A listener
#: that takes the connection and says nothing (another service on the port, a stalled host)
#: is given up on sooner than a welcome, so the daemon says so and dials again.
DIAL_TIMEOUT_S = 10.0
#: A process call gets the processor's timeout plus this, so the processor decides first.
CALL_MARGIN_S = 5.0


class EngineHostError(EngineError):
    """The host refused, failed or went away; ``fix`` says what to do when it is known."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


class EngineHostInterrupted(EngineHostError, EngineInterrupted):
    """The host's engine was interrupted in this call (the daemon's ``interrupt()``): not a
    failure of the host."""


class EngineHostLost(EngineHostError, EngineLost):
    """The host did not answer: the connection broke or the answer did not come in time."""


def open_connection(url: EngineUrl, *, open_timeout: float,
                    ssl_context: ssl.SSLContext | None = None,
                    fingerprint: str | None = None) -> Any:
    """A WebSocket connection to the host. With ``fingerprint`` ("sha256:HEX") it speaks TLS
    and the host's certificate must hash to it, checked on the TLS socket before the
    WebSocket handshake, so nothing (least of all the token in ``hello``) reaches another
    host. ``ssl_context`` replaces the pinning context (no fingerprint: the caller's own
    verification)."""
    from websockets.exceptions import InvalidHandshake
    from websockets.sync.client import connect, unix_connect

    options: dict[str, Any] = {
        "max_size": protocol.MAX_MESSAGE_BYTES, "open_timeout": open_timeout,
        "close_timeout": 1.0, "compression": None,  # JPEG and raw frames do not deflate
    }
    address = url.address
    if fingerprint is not None and ssl_context is None:
        from faceswap_cam.daemon.engine_host.security import client_context

        ssl_context = client_context()
    # A ws:// URI in every case: TLS, when used, is already up on the socket handed over.
    uri = address.websocket_uri()
    try:
        if address.path is not None:
            opening = unix_connect(address.path, uri, **options)
        elif ssl_context is None:
            opening = connect(uri, proxy=None, **options)
        else:
            tls = _open_tls(url, ssl_context, open_timeout, fingerprint)
            try:
                opening = connect(uri, sock=tls, proxy=None, **options)
            except BaseException:
                tls.close()
                raise
        # Entered as a context manager (websockets 17 warns otherwise); close() leaves it.
        connection = opening.__enter__()
    except ssl.SSLError as exc:
        raise EngineHostError(f"cannot set up TLS with the engine host at {url}: "
                              f"{exc.reason or exc}", fix="check that the URL is the one "
                              "`faceswap-cam engine serve` printed there (a host on another "
                              "machine speaks TLS)") from exc
    except TimeoutError as exc:  # before OSError, whose subclass it is
        raise EngineHostError(f"cannot reach the engine host at {url}: no answer within "
                              f"{open_timeout:g} s", fix="check that `faceswap-cam engine "
                              "serve` runs there, that the URL is the one it printed, and that "
                              "nothing else listens on its port; the daemon retries by itself") \
            from exc
    except (OSError, InvalidHandshake) as exc:
        raise EngineHostError(f"cannot reach the engine host at {url}: {exc}",
                              fix="check that `faceswap-cam engine serve` runs there and the "
                              "URL is the one it printed; the daemon retries by itself") \
            from exc
    return connection


def _open_tls(url: EngineUrl, context: ssl.SSLContext, timeout: float,
              fingerprint: str | None) -> ssl.SSLSocket:
    """TCP, then the TLS handshake, then the pin: the socket is handed on only if the
    host's certificate is the paired one."""
    import socket

    host, port = url.address.host or "127.0.0.1", url.address.port
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        tls = context.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise
    if fingerprint is not None:
        der = tls.getpeercert(binary_form=True)
        actual = "sha256:" + hashlib.sha256(der).hexdigest() if der else "none"
        if not hmac.compare_digest(actual, fingerprint.lower()):
            tls.close()
            raise EngineHostError(
                f"the engine host at {url} shows certificate {actual}, not the paired "
                f"{fingerprint.lower()}: the host's certificate changed (a new install, or "
                "its engine-host folder deleted) or this is not your host; the token was "
                "not sent", fix="if you changed the host, pair again with the line "
                "`faceswap-cam engine serve` prints there; otherwise do not use this network")
    tls.settimeout(None)
    return tls


class EngineHostProxy:
    """A connected engine host, used like a local engine."""

    def __init__(self, connection: Any, welcome: Welcome, *, url: str, call_timeout_s: float,
                 frame_size: tuple[int, int] | None = None,
                 on_close: Callable[[bool, str], None] | None = None) -> None:
        self._connection = connection
        self.url = url
        self.engine_name = welcome.engine
        self.first_batch = welcome.first_batch
        self.next_batch = welcome.next_batch
        self._call_timeout_s = call_timeout_s
        self._on_close = on_close
        self._shared: codec.SharedFrames | None = None
        if welcome.shm:
            if frame_size is None:
                raise EngineHostError("the engine host offered shared memory for frames of "
                                      "a size this daemon did not announce")
            try:
                self._shared = codec.SharedFrames.attach(welcome.shm, *frame_size,
                                                         welcome.shm_inputs,
                                                         welcome.shm_results)
            except (OSError, ValueError) as exc:  # ProtocolError is a ValueError
                raise EngineHostError(f"the engine host at {url} offered shared memory "
                                      f"{welcome.shm!r} that cannot be used: {exc}",
                                      fix="restart the engine host") from exc
        # JPEG staging: which frame (by identity; the reference keeps the id unique) went
        # ahead under which id. The host keeps the newest ``welcome.staged``; we keep as
        # many, up to what a batch and the next one need (as our host offers), whatever a
        # host says: each is a frame held in memory.
        self._stage_capacity = min(welcome.staged,
                                   2 * max(welcome.first_batch, welcome.next_batch) + 1)
        self._staged: OrderedDict[int, tuple[int, np.ndarray]] = OrderedDict()
        # JPEG coding on every core (its threads start with the first JPEG batch, so a
        # shared-memory connection starts none), into frames the daemon has let go of.
        self._coder = codec.Coder()
        self._pool = codec.FramePool(codec.POOL_FRAMES)
        self._stage_lock = threading.Lock()
        self._next_stage_id = 0
        #: Where the host's engine generated the last swapped batch (it says, the daemon
        #: reads it like an engine's own).
        self.generation_window: GenerationWindow | None = None
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._in_flight = False
        self._closed = False
        self.failure = ""
        self.bytes_sent = 0
        self.bytes_received = 0

    @classmethod
    def connect(cls, url: EngineUrl, token: str, *, frame_size: tuple[int, int] | None,
                call_timeout_s: float, open_timeout_s: float = DIAL_TIMEOUT_S,
                welcome_timeout_s: float = CONTROL_TIMEOUT_S,
                ssl_context: ssl.SSLContext | None = None,
                on_close: Callable[[bool, str], None] | None = None) -> EngineHostProxy:
        """Connect, say hello, and check the host's answer (its version, its refusal).

        ``on_close(hung, failure)`` runs when the proxy is closed: ``hung`` when a call was
        still waiting for its answer, ``failure`` the last error a call raised ("" if none).
        """
        connection = open_connection(url, open_timeout=open_timeout_s, ssl_context=ssl_context,
                                     fingerprint=url.fingerprint)
        try:
            width, height = frame_size if frame_size else (None, None)
            try:
                hello = protocol.encode(Hello(
                    protocol=protocol.PROTOCOL_VERSION, version=protocol.package_version(),
                    token=token, width=width, height=height))
            except ValueError:  # said here, not as the host's "no hello within 10 s"
                raise EngineHostError(f"cannot say hello to the engine host at {url}: the "
                                      "token or frame size is not one a host takes",
                                      fix="pair again with the line `faceswap-cam engine "
                                      "serve` printed there") from None
            # A host that refuses at once (busy) has closed before our hello is out: read
            # its refusal all the same.
            with contextlib.suppress(Exception):
                connection.send(hello)
            header, _ = _receive(connection, welcome_timeout_s, url=str(url))
            if isinstance(header, Error):
                raise EngineHostError(f"the engine host at {url} refused: {header.message}",
                                      header.fix)
            if not isinstance(header, Welcome):
                raise EngineHostError(f"the engine host at {url} answered {header.type}, "
                                      "not welcome")
            if header.protocol != protocol.PROTOCOL_VERSION:
                raise EngineHostError(protocol.version_mismatch(header.protocol, header.version,
                                                                ours_are="daemon"),
                                      "install the same faceswap-cam on both machines")
            if header.shm is not None and url.address.path is None:
                # Only our own child on its private Unix socket makes segments for us; a
                # name from a host over TCP could be any process's memory on this machine.
                raise EngineHostError(f"the engine host at {url} offered shared memory over "
                                      "TCP: only a host on this machine's Unix socket may",
                                      fix="use a faceswap-cam engine host of the same "
                                      "version")
            return cls(connection, header, url=str(url), call_timeout_s=call_timeout_s,
                       frame_size=frame_size, on_close=on_close)
        except BaseException:
            connection.close()
            raise

    # --- the SwapEngine contract -----------------------------------------------------------

    def set_reference(self, image: np.ndarray) -> None:
        self._request(Reference(), codec.encode_png(image), CONTROL_TIMEOUT_S)

    def stage(self, pixels: np.ndarray) -> None:
        """Send a frame that a batch will probably use ahead, as it is fed, so the batch
        costs no copy (locally) or encoding and decoding (remotely) when it is sent. Never
        raises: a frame that could not go ahead is sent with its batch."""
        if self._closed:
            return
        try:
            if self._shared is not None:
                self._shared.stage(pixels)
            elif self._stage_capacity:
                self._stage_jpeg(pixels)
        except Exception as exc:  # the batch finds out, with the processor's handling
            logger.debug("a frame was not staged: %s", exc)

    def _stage_jpeg(self, pixels: np.ndarray) -> None:
        width, height = codec.check_frames([pixels])
        data = codec.encode_jpeg([pixels], self._coder)
        with self._stage_lock:
            stage_id = self._next_stage_id
            self._next_stage_id += 1
            # Sent under the lock, so ids reach the host in the order we record them.
            self._connection.send(protocol.encode(
                Stage(id=stage_id, width=width, height=height), data))
            self.bytes_sent += len(data)
            self._staged.pop(id(pixels), None)
            self._staged[id(pixels)] = (stage_id, pixels)
            while len(self._staged) > self._stage_capacity:
                self._staged.popitem(last=False)

    def _staged_ids(self, frames: Sequence[np.ndarray]) -> list[int] | None:
        with self._stage_lock:
            ids = []
            for frame in frames:
                entry = self._staged.get(id(frame))  # the entry holds the frame: ids stay unique
                if entry is None:
                    return None
                ids.append(entry[0])
            return ids

    def process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        try:
            return self._process(frames)
        except EngineInterrupted:  # asked for: a stop, or a call given up on
            raise
        except Exception as exc:
            self.failure = str(exc) or repr(exc)  # for on_close: the status says it
            raise

    def _process(self, frames: Sequence[np.ndarray]) -> SwapResult:
        width, height = codec.check_frames(frames)
        count = len(frames)
        shared = self._shared
        into: list[int] | None = None
        payload = b""
        if shared is not None and shared.fits(count, width, height):
            slots = shared.slots_for(frames)
            into = shared.free_results(count)
            header = Process(count=count, width=width, height=height, codec="shm",
                             slots=slots, results=into)
        else:
            staged = self._staged_ids(frames) if self._stage_capacity else None
            header = Process(count=count, width=width, height=height, codec="jpeg",
                             staged=staged)
            if staged is None:
                payload = codec.encode_jpeg(frames, self._coder)
        try:
            reply, body = self._exchange(header, payload,  # process() notes a failure
                                         self._call_timeout_s + CALL_MARGIN_S)
        finally:
            if shared is not None:
                shared.release()
        if not isinstance(reply, Result):
            raise EngineHostError(f"the engine host answered {reply.type} to a batch")
        if reply.count != count or reply.codec != header.codec:
            raise EngineHostError(f"the engine host answered a batch of {count} frames "
                                  f"({header.codec}) with a result for {reply.count} "
                                  f"({reply.codec})")
        if not reply.swapped:
            return SwapResult.untouched(frames)
        self.generation_window = None if reply.window is None \
            else GenerationWindow(*reply.window)
        if header.codec == "shm":
            assert shared is not None and header.slots is not None
            if into is not None:
                return SwapResult(shared.result_frames(into))
            return SwapResult(shared.read(header.slots))
        if reply.boxes is None:
            raise EngineHostError("the engine host sent a swapped batch without its boxes")
        try:
            return SwapResult(codec.decode_boxes(body, frames, reply.boxes, self._coder,
                                                 self._pool),
                              changed=list(reply.boxes))
        except ProtocolError as exc:
            raise EngineHostError(f"the engine host's result is unreadable: {exc}") from exc

    def reset(self) -> None:
        self._request(Reset(), b"", CONTROL_TIMEOUT_S)

    def interrupt(self) -> None:
        if self._closed:
            return
        try:
            self._connection.send(protocol.encode(Interrupt()))
        except Exception:  # a closed connection needs no interrupting
            logger.debug("interrupt not sent: the connection is closed")

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        hung = self._in_flight
        try:
            self._connection.close()
        except Exception:
            logger.debug("closing the engine host connection failed", exc_info=True)
        if self._shared is not None:
            self._shared.close()
        self._coder.close()
        if self._on_close is not None:
            self._on_close(hung, self.failure)

    # --- one request, one answer -----------------------------------------------------------

    def _request(self, header: Message, payload: bytes,
                 timeout: float) -> tuple[Message, memoryview]:
        """An exchange whose failure is noted for ``on_close`` (a reference, a reset)."""
        try:
            return self._exchange(header, payload, timeout)
        except Exception as exc:
            self.failure = str(exc) or repr(exc)
            raise

    def _exchange(self, header: Message, payload: bytes,
                  timeout: float) -> tuple[Message, memoryview]:
        with self._lock:
            if self._closed:
                raise EngineHostLost("the engine host connection is closed")
            self._in_flight = True
            try:
                data = protocol.encode(header, payload)
                try:
                    self._connection.send(data)
                except Exception as exc:
                    raise _lost(self.url, exc) from exc
                self.bytes_sent += len(data)
                reply, body = _receive(self._connection, timeout, url=self.url)
                # The whole message: the header and the payload after it.
                self.bytes_received += len(body.obj) if isinstance(body.obj, bytes) else 0
            finally:
                self._in_flight = False
        if isinstance(reply, Error):
            raise (EngineHostInterrupted if reply.interrupted else EngineHostError)(
                reply.message, reply.fix)
        if not isinstance(reply, Ok | Result):
            raise EngineHostError(f"the engine host answered {reply.type} to {header.type}")
        return reply, body


def _receive(connection: Any, timeout: float, *, url: str) -> tuple[Message, memoryview]:
    try:
        data = connection.recv(timeout=timeout)
    except TimeoutError:
        raise EngineHostLost(f"the engine host at {url} did not answer within "
                             f"{timeout:.0f} s") from None
    except Exception as exc:
        raise _lost(url, exc) from exc
    if isinstance(data, str):
        raise EngineHostError(f"the engine host at {url} sent text, not a message")
    try:
        return protocol.decode(data)
    except ProtocolError as exc:
        raise EngineHostError(f"the engine host at {url} sent a malformed message: {exc}") \
            from exc


def _lost(url: str, exc: BaseException) -> EngineHostLost:
    from websockets.exceptions import ConnectionClosed

    if isinstance(exc, ConnectionClosed):
        close = exc.rcvd
        parts = [] if close is None else [str(close.code), close.reason]
        why = f" ({' '.join(filter(None, parts))})" if parts else ""
        return EngineHostLost(f"the engine host at {url} closed the connection{why}")
    return EngineHostLost(f"the connection to the engine host at {url} broke: {exc}")
