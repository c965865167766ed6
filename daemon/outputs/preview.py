"""The preview output: a small web page on loopback with the MJPEG stream and live stats.

It serves people without a virtual-camera driver, OBS browser sources and tests that drive a
real browser. Routes: ``/`` (the page), ``/stream.mjpg``, ``/snapshot.jpg`` and
``/stats.json``. Only loopback addresses are bound, and requests whose ``Host`` header is not a
loopback name with our port are refused, so a web page on another site cannot read the camera
through DNS rebinding.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Generator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Self
from urllib.parse import urlsplit

import cv2
import numpy as np

from faceswap_cam.daemon.config import LOOPBACK_HOSTS, loopback_host_headers
from faceswap_cam.daemon.outputs.base import Sink, SinkContext, SinkError, StatsProvider, Tick
from faceswap_cam.daemon.stats import jsonable

logger = logging.getLogger(__name__)

_LOOPBACK_HOSTS = LOOPBACK_HOSTS
_JPEG_QUALITY = 80
_BOUNDARY = "faceswapcamframe"
# A stream client that got no new frame for this long is sent the latest one again: a paused
# daemon then still shows its last picture, and a vanished client is noticed on the write.
_KEEPALIVE_S = 5.0
# How often the accept loop looks at its shutdown flag; bounds how long close() waits.
_POLL_INTERVAL_S = 0.1

# The page lives beside this module as a file, so it can be edited as HTML.
_PAGE = (resources.files("faceswap_cam.daemon.outputs") / "static" / "preview.html").read_bytes()

_PAGE_CSP = ("default-src 'none'; img-src 'self'; connect-src 'self'; "
             "script-src 'unsafe-inline'; style-src 'unsafe-inline'")


def _encode_jpeg(pixels: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise SinkError(f"cannot encode a {pixels.shape} {pixels.dtype} frame as JPEG")
    return bytes(buffer)


class _Server(ThreadingHTTPServer):
    """The HTTP server, knowing its sink and every open connection (so close can cut them)."""

    daemon_threads = True
    # On Windows SO_REUSEADDR lets a second process bind a port that is in use; elsewhere it
    # only allows rebinding over TIME_WAIT sockets, which a restart needs.
    allow_reuse_address = sys.platform != "win32"

    def __init__(self, address: tuple[str, int], sink: PreviewSink) -> None:
        self.sink = sink
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._cutting = False
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can stall the
        # start for seconds on machines with broken resolvers; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            if not self._cutting:
                self._connections.add(connection)
                return
        self._cut(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def cut_connections(self) -> None:
        """Shut every open connection down, so handlers blocked on a slow or idle client
        (browsers keep spare sockets open) end now rather than at their timeout."""
        with self._connections_lock:
            self._cutting = True
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            self._cut(connection)

    @staticmethod
    def _cut(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):  # already closed by the client
            connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a client going away is routine here.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError) or self._cutting:
            logger.debug("preview client %s: %s", client_address, exc)
        else:
            logger.exception("preview request from %s failed", client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FaceSwapCam"
    sys_version = ""
    # Bounds how long a stalled client can hold a thread.
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("preview %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        sink = self.server.sink
        if not sink.host_allowed(self.headers.get("Host")):
            self._send_body(HTTPStatus.FORBIDDEN, b"forbidden: open the preview through "
                            b"127.0.0.1 or localhost\n", "text/plain; charset=utf-8")
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send_body(HTTPStatus.OK, _PAGE, "text/html; charset=utf-8",
                            {"Content-Security-Policy": _PAGE_CSP})
        elif path == "/stats.json":
            body = json.dumps(sink.stats_document(), allow_nan=False).encode()
            self._send_body(HTTPStatus.OK, body, "application/json")
        elif path == "/snapshot.jpg":
            jpeg = sink.latest_jpeg()[0]
            if jpeg is None:
                self._send_body(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet\n",
                                "text/plain; charset=utf-8", {"Retry-After": "1"})
            else:
                self._send_body(HTTPStatus.OK, jpeg, "image/jpeg")
        elif path == "/stream.mjpg":
            self._stream(sink)
        else:
            self._send_body(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _send_body(self, status: HTTPStatus, body: bytes, content_type: str,
                   headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers(headers)
        self.wfile.write(body)

    def _common_headers(self, headers: dict[str, str] | None = None) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # Any web page could otherwise show the user's camera in an <img> (without reading
        # its pixels); browsers now load these only into pages of the preview's own origin.
        # OBS's browser source opens the preview URL itself, which stays allowed.
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def _stream(self, sink: PreviewSink) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Connection", "close")
        self._common_headers()
        self.close_connection = True
        frames = sink.stream_frames()
        try:
            for jpeg in frames:
                self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                                 + jpeg + b"\r\n")
                self.wfile.flush()
        except OSError as exc:  # ConnectionError and TimeoutError included
            logger.debug("preview stream client %s left: %s", self.address_string(), exc)
        finally:
            # Ends the generator now, so the client stops counting as a watcher at once.
            frames.close()


class PreviewSink(Sink):
    """Serves the output as an MJPEG web page on a loopback address.

    ``send`` keeps a reference to the newest frame (the caller must not change it afterwards)
    and encodes JPEGs only while someone watches the stream, at most ``max_fps`` a second;
    a snapshot encodes the newest frame on demand.
    """

    slots = 1
    overlay = True

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, max_fps: float = 15.0,
                 stats: StatsProvider = dict) -> None:
        if host not in _LOOPBACK_HOSTS:
            raise SinkError(f"the preview is served on loopback only, not {host!r}: use "
                            + ", ".join(_LOOPBACK_HOSTS))
        if not 0 <= port <= 65535:
            raise SinkError(f"preview port {port} is not in 0..65535")
        if not max_fps > 0:
            raise SinkError(f"preview fps must be above 0, not {max_fps}")
        self.host = host
        self._port = port
        self.max_fps = max_fps
        self._stats = stats
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._size: tuple[int, int] | None = None
        # One condition guards all frame state; stream clients wait on it for new JPEGs.
        self._cond = threading.Condition()
        self._closed = False
        self._frame: np.ndarray | None = None
        self._frame_seq = 0
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0
        self._stream_clients = 0
        self._next_encode = 0.0
        self._last_tick: int | None = None
        self.frames_received = 0
        self.frames_encoded = 0

    @classmethod
    def from_context(cls, arg: str, context: SinkContext) -> Self:
        """``preview`` or ``preview:PORT``, the rest from the ``preview_*`` settings."""
        options = context.options
        port = int(options.get("preview_port", 8765))
        if arg:
            try:
                port = int(arg)
            except ValueError:
                raise SinkError(f"preview:{arg}: the argument is a port number, "
                                "e.g. preview:8765 (0 picks a free port)") from None
        return cls(host=str(options.get("preview_host", "127.0.0.1")), port=port,
                   max_fps=float(options.get("preview_fps", 15.0)), stats=context.stats)

    @property
    def port(self) -> int:
        """The bound port once open (the real one when 0 was asked for)."""
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/"

    @property
    def description(self) -> str:
        return f"preview {self.url}"

    @property
    def clients(self) -> int:
        """How many stream clients are connected now."""
        with self._cond:
            return self._stream_clients

    def open(self, size: tuple[int, int], fps: float) -> None:
        if self._server is not None or self._closed:
            raise SinkError("the preview sink can be opened once")
        server_class = _Server6 if ":" in self.host else _Server
        try:
            server = server_class((self.host, self._port), self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SinkError(
                    f"preview port {self._port} on {self.host} is in use (another "
                    "faceswap-cam?): choose another with --preview-port PORT, or "
                    "--preview-port 0 for a free one") from exc
            raise SinkError(f"cannot serve the preview on {self.host} port {self._port}: "
                            f"{exc.strerror or exc}; try --preview-port 0") from exc
        self._server = server
        self._port = int(server.server_address[1])
        self._size = size
        self._thread = threading.Thread(target=server.serve_forever, args=(_POLL_INTERVAL_S,),
                                        name=f"preview-{self._port}", daemon=True)
        self._thread.start()
        logger.info("preview at %s (stream %sstream.mjpg)", self.url, self.url)

    def send(self, pixels: np.ndarray, tick: Tick) -> None:
        now = time.monotonic()
        with self._cond:
            if self._closed:
                return
            self._frame = pixels
            self._frame_seq += 1
            self._last_tick = tick.number
            self.frames_received += tick.repeat
            if self._stream_clients == 0 or now < self._next_encode:
                return
            interval = 1.0 / self.max_fps
            # Due times advance by whole intervals so frame jitter does not halve the rate;
            # after a pause they restart from now instead of allowing a burst.
            if now - self._next_encode > interval:
                self._next_encode = now + interval
            else:
                self._next_encode += interval
            seq = self._frame_seq
        # Encoded outside the lock: stream clients and stats must not wait for the encoder.
        self._store_jpeg(_encode_jpeg(pixels), seq)

    def _store_jpeg(self, jpeg: bytes, seq: int) -> None:
        with self._cond:
            if seq > self._jpeg_seq:
                self._jpeg, self._jpeg_seq = jpeg, seq
                self.frames_encoded += 1
                self._cond.notify_all()

    def latest_jpeg(self) -> tuple[bytes | None, int]:
        """The newest frame as JPEG (encoded now if the cached one is older) and its number."""
        with self._cond:
            frame, seq = self._frame, self._frame_seq
            if frame is None or self._jpeg_seq == seq:
                return self._jpeg, self._jpeg_seq
        self._store_jpeg(_encode_jpeg(frame), seq)
        with self._cond:
            return self._jpeg, self._jpeg_seq

    def stream_frames(self) -> Generator[bytes, None, None]:
        """Yield JPEGs for one stream client until the sink closes: the newest at once, then
        each new one as it is encoded; counted as a watcher meanwhile."""
        with self._cond:
            if self._closed:
                return
            self._stream_clients += 1
        try:
            jpeg, seen = self.latest_jpeg()
            if jpeg is not None:
                yield jpeg
            while True:
                with self._cond:
                    fresh = self._cond.wait_for(functools.partial(self._newer_or_closed, seen),
                                                timeout=_KEEPALIVE_S)
                    if self._is_closed():
                        return
                    jpeg, seen = self._jpeg, self._jpeg_seq
                if not fresh:
                    jpeg, seen = self.latest_jpeg()
                if jpeg is not None:
                    yield jpeg
        finally:
            with self._cond:
                self._stream_clients -= 1

    # Methods rather than inline reads of ``_closed``: they run with the lock held, after waits
    # during which another thread may have closed the sink.
    def _newer_or_closed(self, seen: int) -> bool:
        return self._closed or self._jpeg_seq > seen

    def _is_closed(self) -> bool:
        return self._closed

    def stats_document(self) -> dict[str, Any]:
        """``/stats.json``: the daemon's live stats plus this preview's own."""
        try:
            stats = dict(self._stats())
        except Exception as exc:
            logger.debug("stats provider failed", exc_info=True)
            stats = {"stats_error": f"{type(exc).__name__}: {exc}"}
        with self._cond:
            stats["preview"] = {
                "url": self.url,
                "clients": self._stream_clients,
                "fps_cap": self.max_fps,
                "size": list(self._size) if self._size else None,
                "frames_received": self.frames_received,
                "frames_encoded": self.frames_encoded,
                "last_tick": self._last_tick,
            }
        result: dict[str, Any] = jsonable(stats)
        return result

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request's ``Host`` names this server by a loopback name (DNS-rebinding
        guard: a rebound name would carry the attacker's host name here)."""
        if not host_header:
            return False
        return host_header.strip().lower() in loopback_host_headers(self._port)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()  # wakes stream clients, which then end their responses
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        # shutdown() waits for serve_forever to acknowledge; it would wait forever if the
        # loop never ran, so only ask a live thread.
        if thread is not None and thread.is_alive():
            server.shutdown()
        server.server_close()
        server.cut_connections()
        if thread is not None:
            thread.join(timeout=2.0)
        logger.info("preview at %s closed", self.url)
