"""The daemon's local control API: an HTTP+JSON server on loopback (its client is client.py).

Who may drive the daemon: only a process of the same user. The server binds loopback only and
every request must carry ``Authorization: Bearer <token>``, a random token that exists only in
memory and in a 0600 *control file* (``{"url", "token", "pid"}``) in the user's runtime (or
config) directory. A web page is locked out three times over: it cannot read the token, a
rebound DNS name shows up in ``Host`` (refused), and a cross-site request carries ``Origin`` or
``Sec-Fetch-Site`` (refused). No CORS headers are ever sent, so browsers never hand a page the
answer either.

How many at once: up to ``MAX_REQUESTS`` requests are served together (a burst of a few
hundred ``status`` calls is, from a snapshot refreshed at most every ``STATUS_MAX_AGE_S``);
past that each is refused with a JSON 503 and ``Retry-After``, never uvicorn's plain-text one.

Routes (all answer JSON; errors are ``{"error": "..."}``)::

    GET    /status                      the daemon's status document (status.DaemonStatus)
    GET    /references                  the reference library
    POST   /references?name=NAME        raw image bytes (Content-Type image/*) -> 201, the entry
    POST   /references/{name}/select    -> the library
    DELETE /references/{name}           -> the library
    POST   /swap      {"enabled": bool} -> status
    POST   /pause     {"paused": bool}  -> status
    POST   /playout   {"mode": str}     -> status
    POST   /fallback  {"mode": str}     -> status
    POST   /badge     {"enabled": bool} -> status
    POST   /shutdown                    -> 202
    GET    /openapi.json                the schema (behind the token like everything else)
    GET    /identity                    {"service": "faceswap-cam", "pid": N}; the one route
                                        without the token, so that a client can check who
                                        listens before it sends the token there
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceswap_cam.daemon.config import (
    LOOPBACK_HOSTS,
    Fallback,
    Playout,
    loopback_host_headers,
)
from faceswap_cam.daemon.control.client import (
    IDENTITY_PATH,
    MAX_IMAGE_BYTES,
    SERVICE_NAME,
    size_text,
)
from faceswap_cam.daemon.control.control_file import (
    ControlFile,
    default_token_file,
    remove_control_file,
    write_control_file,
)
from faceswap_cam.daemon.control.status import DaemonStatus
from faceswap_cam.daemon.stats import jsonable

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_REQUESTS",
    "STATUS_MAX_AGE_S",
    "ControlServer",
    "DaemonControl",
    "create_api",
]

#: Largest body of every request but an image upload (they are all tiny JSON objects).
MAX_JSON_BYTES = 64 * 1024
#: Requests served at once; past it each is refused with a JSON 503 that says so. Well above a
#: burst of 200 ``status`` calls, which the status snapshot makes cheap.
MAX_REQUESTS = 512
#: ``GET /status`` answers from a snapshot at most this old, so a burst of clients costs the
#: daemon one status call per period rather than one each. Any change made through the API
#: is seen at once.
STATUS_MAX_AGE_S = 0.1
#: Uploads whose bodies are read at once (up to MAX_IMAGE_BYTES each); later ones wait.
UPLOAD_SLOTS = 4

_LOOPBACK_NAMES = LOOPBACK_HOSTS
# Bounded so that close() cannot hang on a client that never finishes its request.
_GRACEFUL_SHUTDOWN_S = 2
_START_TIMEOUT_S = 10.0
_JOIN_TIMEOUT_S = 5.0
_BACKLOG = 512


# --- what the daemon implements ---------------------------------------------------------------


class DaemonControl(Protocol):
    """What the control API asks of the daemon.

    Methods are called from the server's worker threads, possibly several at once, so an
    implementation must be thread-safe. Each must return promptly; ``shutdown`` in particular
    only *asks* the daemon to stop (closing the :class:`ControlServer` from inside a request
    would wait for that very request to finish).
    """

    def status(self) -> DaemonStatus:
        """A snapshot of everything the daemon reports."""
        ...

    def set_swap(self, enabled: bool) -> None: ...

    def set_playout(self, mode: str) -> None:
        """Raises ValueError naming the allowed modes when ``mode`` is not one."""
        ...

    def set_fallback(self, mode: str) -> None:
        """Raises ValueError naming the allowed modes when ``mode`` is not one."""
        ...

    def set_paused(self, paused: bool) -> None: ...

    def set_mic(self, enabled: bool) -> None:
        """FaceSwap Mic on or off (the sound system's problems show in the status)."""
        ...

    def set_ai_badge(self, enabled: bool) -> None:
        """Mark the virtual camera's swapped frames as AI-altered (a corner badge) or not."""
        ...

    def list_references(self) -> list[dict[str, Any]]:
        """One entry per stored reference: ``name``, ``selected``, ``width``, ``height``,
        ``added``."""
        ...

    def add_reference(self, name: str | None, data: bytes) -> dict[str, Any]:
        """Store an encoded image (named after ``name``, or a generated name) and return its
        entry. Raises ValueError saying what is wrong with a bad image or name; the library is
        then unchanged."""
        ...

    def select_reference(self, name: str) -> None:
        """Swap to this reference from the next batch on. KeyError if there is none."""
        ...

    def remove_reference(self, name: str) -> None:
        """KeyError if there is none."""
        ...

    def shutdown(self) -> None:
        """Ask the daemon to stop (non-blocking)."""
        ...


# --- the API ----------------------------------------------------------------------------------


class SwapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Strict: lax bools would turn "no" or 0 into a decision the user did not express.
    enabled: StrictBool


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paused: StrictBool


class MicBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool


class BadgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool


class PlayoutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A plain string: the daemon owns the list of modes and says which are allowed.
    mode: str = Field(description=" | ".join(m.value for m in Playout))


class FallbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str = Field(description=" | ".join(m.value for m in Fallback))


class _BodyTooLarge(HTTPException):
    """Raised from inside a body read. An HTTPException, so FastAPI passes it through its own
    body parsing untouched and the exception handler renders it as a 413."""


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class _Guard:
    """ASGI middleware run before any route: who may call, and how much they may send.

    Refusals answer before the app sees the request, so nothing in the daemon can change on one.
    """

    def __init__(self, app: ASGIApp, *, token: str, port_getter: Callable[[], int],
                 max_image_bytes: int, max_json_bytes: int, max_requests: int,
                 on_change: Callable[[], None]) -> None:
        self.app = app
        self._token = token.encode()
        self._port_getter = port_getter
        self._max_image_bytes = max_image_bytes
        self._max_json_bytes = max_json_bytes
        self._max_requests = max_requests
        self._on_change = on_change
        # Only the event loop's thread touches this.
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await refusal(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "GET" and scope.get("path") == IDENTITY_PATH:
            # Outside the bound: clients ask it before anything else, and a busy daemon must
            # not pass for a stranger.
            await self._serve(scope, receive, send)
            return
        if self._in_flight >= self._max_requests:
            await _error(503, f"the daemon is busy: {self._in_flight} control requests are "
                              "being served, the most it takes at once; try again in a moment",
                         {"Retry-After": "1"})(scope, receive, send)
            return
        self._in_flight += 1
        changes = scope.get("method") not in ("GET", "HEAD")
        if changes:
            self._on_change()  # a status snapshot being taken now may predate this change
        try:
            await self._serve(scope, receive, send)
        finally:
            self._in_flight -= 1
            if changes:
                self._on_change()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._limit(scope)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _error(400, "invalid Content-Length")(scope, receive, send)
                return
            if int(declared) > limit:
                await _error(413, _too_large(limit))(scope, receive, send)
                return

        # A chunked body declares no length: count it as it arrives instead.
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(413, _too_large(limit))
            return message

        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge as exc:
            # Only reached when the read happened outside the routes' exception handling.
            if started:
                raise
            await _error(413, str(exc.detail))(scope, receive, send)

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        port = self._port_getter()
        host = (_header(scope, b"host") or "").strip().lower()
        allowed_hosts = loopback_host_headers(port)
        if host not in allowed_hosts:
            # A DNS-rebinding page reaches us under its own host name.
            return _error(403, "forbidden host: use 127.0.0.1 or localhost with the daemon's port")
        origin = _header(scope, b"origin")
        allowed_origins = {f"http://{name}" for name in allowed_hosts}
        if origin is not None and origin.strip().lower() not in allowed_origins:
            return _error(403, "cross-origin requests are not allowed")
        # Browsers send this even where they omit Origin; other clients never do.
        fetch_site = _header(scope, b"sec-fetch-site")
        if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
            return _error(403, "cross-site requests are not allowed")
        if scope.get("method") == "GET" and scope.get("path") == IDENTITY_PATH:
            return None  # says only who we are, for clients to check before the token
        authorization = _header(scope, b"authorization") or ""
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode("latin-1"), self._token):
            return _error(401, "missing or wrong token: send `Authorization: Bearer <token>` "
                               "with the token from the daemon's control file",
                          {"WWW-Authenticate": "Bearer"})
        return None

    def _limit(self, scope: Scope) -> int:
        if scope.get("method") == "POST" and scope.get("path", "").rstrip("/") == "/references":
            return self._max_image_bytes
        return self._max_json_bytes


def _too_large(limit: int) -> str:
    return f"request body too large: the limit is {size_text(limit)}"


def _json(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(jsonable(content), status_code=status)


def _status(control: DaemonControl) -> JSONResponse:
    return _json(_calling("status", control.status).model_dump(mode="json"))


class _StatusSnapshot:
    """``GET /status`` from a snapshot at most ``max_age_s`` old: one daemon call serves every
    client of a burst (those arriving during a refresh wait for it). A change made through the
    API makes the snapshot stale at once, including one whose refresh was under way."""

    def __init__(self, control: DaemonControl, max_age_s: float) -> None:
        self._control = control
        self._max_age_s = max_age_s
        self._body: bytes | None = None
        self._taken_at = 0.0
        self._generation = 0
        self._refreshing = asyncio.Lock()

    def invalidate(self) -> None:
        self._generation += 1
        self._body = None

    def _fresh(self) -> bytes | None:
        if self._body is not None and time.monotonic() - self._taken_at < self._max_age_s:
            return self._body
        return None

    async def response(self) -> Response:
        body = self._fresh()
        if body is None:
            async with self._refreshing:
                body = self._fresh()
                if body is None:
                    generation, taken_at = self._generation, time.monotonic()
                    body = bytes((await run_in_threadpool(_status, self._control)).body)
                    if generation == self._generation:
                        self._body, self._taken_at = body, taken_at
        return Response(body, media_type="application/json")


_T = TypeVar("_T")


def _calling(what: str, function: Callable[..., _T], *args: Any,
             value_error: int | None = None, key_error: int | None = None) -> _T:
    """Call the daemon, turning the errors it documents into HTTP errors; anything else is a
    daemon bug, logged with its traceback and answered 500."""
    try:
        return function(*args)
    except ValueError as exc:
        if value_error is None:
            _fail(what, exc)
        raise HTTPException(value_error, str(exc)) from exc
    except KeyError as exc:
        if key_error is None:
            _fail(what, exc)
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
        raise HTTPException(key_error, message or f"unknown reference {args[0]!r}") from exc
    except HTTPException:
        raise
    except Exception as exc:
        _fail(what, exc)


def _fail(what: str, exc: BaseException) -> NoReturn:
    logger.exception("control: %s failed", what)
    raise HTTPException(500, f"{what} failed: {type(exc).__name__}: {exc}") from exc


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return _error(exc.status_code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "not JSON")
            position = error.get("loc", ("body", "?"))[-1]
            return _error(400, f"malformed JSON body: {reason} at position {position}")
    problems = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        field = ".".join(location) or "body"
        problems.append(f"{field}: {error.get('msg', 'invalid')}")
    return _error(422, "invalid request: " + "; ".join(problems))


def create_api(
    control: DaemonControl,
    *,
    token: str,
    port_getter: Callable[[], int],
    max_image_bytes: int = MAX_IMAGE_BYTES,
    max_json_bytes: int = MAX_JSON_BYTES,
    max_requests: int = MAX_REQUESTS,
    status_max_age_s: float = STATUS_MAX_AGE_S,
) -> FastAPI:
    """The control API for ``control``. ``port_getter`` gives the port the server listens on
    (known only once it is bound), which requests must name in ``Host`` and ``Origin``."""
    if not token:
        raise ValueError("the control API needs a token")
    app = FastAPI(
        title="FaceSwap Cam control",
        description="Every request needs `Authorization: Bearer <token>`, with the token from "
                    "the daemon's control file.",
        # A browser could not send the token anyway; the schema stays at /openapi.json.
        docs_url=None, redoc_url=None,
    )
    snapshot = _StatusSnapshot(control, status_max_age_s)
    uploads = asyncio.Semaphore(UPLOAD_SLOTS)
    app.add_middleware(_Guard, token=token, port_getter=port_getter,
                       max_image_bytes=max_image_bytes, max_json_bytes=max_json_bytes,
                       max_requests=max_requests, on_change=snapshot.invalidate)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    # Plain `def` routes run in the server's worker threads, so a slow daemon call never
    # blocks the event loop (and with it every other client).

    @app.get("/status", response_model=DaemonStatus)
    async def get_status() -> Response:
        return await snapshot.response()

    @app.get("/references")
    def get_references() -> JSONResponse:
        return _json(_calling("listing references", control.list_references))

    @app.post("/references", status_code=201)
    async def post_reference(
        request: Request,
        name: str | None = Query(None, description="the name to store it under"),
    ) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (content_type.startswith("image/") or content_type == "application/octet-stream"):
            raise HTTPException(415, "send the image file itself as the body, with Content-Type "
                                     "image/* (e.g. image/png)")
        # The guard caps what each may read; the slots, how many bodies are held at once.
        async with uploads:
            data = await request.body()
            if not data:
                raise HTTPException(400, "the request body is empty: send the image file's "
                                         "bytes")
            entry = await run_in_threadpool(_calling, "adding a reference",
                                            control.add_reference, name or None, data,
                                            value_error=422)
        return _json(entry, 201)

    @app.post("/references/{name}/select")
    def select_reference(name: str) -> JSONResponse:
        _calling("selecting a reference", control.select_reference, name, key_error=404)
        return _json(_calling("listing references", control.list_references))

    @app.delete("/references/{name}")
    def delete_reference(name: str) -> JSONResponse:
        _calling("removing a reference", control.remove_reference, name, key_error=404)
        return _json(_calling("listing references", control.list_references))

    @app.post("/swap", response_model=DaemonStatus)
    def post_swap(body: SwapBody) -> JSONResponse:
        _calling("switching swap", control.set_swap, body.enabled)
        return _status(control)

    @app.post("/pause", response_model=DaemonStatus)
    def post_pause(body: PauseBody) -> JSONResponse:
        _calling("pausing", control.set_paused, body.paused)
        return _status(control)

    @app.post("/playout", response_model=DaemonStatus)
    def post_playout(body: PlayoutBody) -> JSONResponse:
        _calling("setting playout", control.set_playout, body.mode, value_error=422)
        return _status(control)

    @app.post("/fallback", response_model=DaemonStatus)
    def post_fallback(body: FallbackBody) -> JSONResponse:
        _calling("setting fallback", control.set_fallback, body.mode, value_error=422)
        return _status(control)

    @app.post("/mic", response_model=DaemonStatus)
    def post_mic(body: MicBody) -> JSONResponse:
        _calling("switching FaceSwap Mic", control.set_mic, body.enabled)
        return _status(control)

    @app.post("/badge", response_model=DaemonStatus)
    def post_badge(body: BadgeBody) -> JSONResponse:
        _calling("switching the AI badge", control.set_ai_badge, body.enabled)
        return _status(control)

    @app.get(IDENTITY_PATH)
    def get_identity() -> JSONResponse:
        return _json({"service": SERVICE_NAME, "pid": os.getpid()})

    @app.post("/shutdown", status_code=202)
    def post_shutdown() -> JSONResponse:
        _calling("shutdown", control.shutdown)
        return _json({"stopping": True}, 202)

    return app


# --- the server -------------------------------------------------------------------------------


class _ThreadServer(uvicorn.Server):
    """uvicorn that signals when it is accepting, never touches signal handlers (the daemon
    owns Ctrl-C, and the control API must not swallow it), and costs nothing while idle.

    uvicorn's own main loop wakes ten times a second to poll ``should_exit`` and refresh the
    Date header; here the loop sleeps until :meth:`request_exit` wakes it (no Date header:
    clients on this machine have no use for it), so a daemon nobody calls does no work here.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit = asyncio.Event()

    def request_exit(self) -> None:
        """Ask the server to stop; safe from any thread."""
        self.should_exit = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(self._exit.set)

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default headers once
        while not self.should_exit:
            await self._exit.wait()
            self._exit.clear()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def install_signal_handlers(self) -> None:
        """uvicorn before 0.29 installs handlers through this instead."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        self.ready.set()


class ControlServer:
    """The control API served by uvicorn in a background thread on a loopback port.

    ``start()`` returns once the port accepts connections and the control file is written;
    ``close()`` stops the server and removes the control file if it is still this server's.
    """

    def __init__(
        self,
        control: DaemonControl,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_file: Path | None = None,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_json_bytes: int = MAX_JSON_BYTES,
        max_requests: int = MAX_REQUESTS,
        status_max_age_s: float = STATUS_MAX_AGE_S,
    ) -> None:
        if host not in _LOOPBACK_NAMES:
            raise ValueError(f"the control API is served on loopback only "
                             f"({', '.join(_LOOPBACK_NAMES)}), not {host!r}")
        self._control = control
        # "localhost" may resolve to either family; bind (and advertise) one address exactly.
        self._host = "127.0.0.1" if host == "localhost" else host
        self._requested_port = port
        self.token_file = token_file if token_file is not None else default_token_file()
        self._max_image_bytes = max_image_bytes
        self._max_json_bytes = max_json_bytes
        self._max_requests = max_requests
        self._status_max_age_s = status_max_age_s
        self._token = secrets.token_urlsafe(32)
        self._port: int | None = None
        self._server: _ThreadServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._wrote_file = False

    @property
    def token(self) -> str:
        return self._token

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the control server is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        with self._lock:
            if self._closed or self._server is not None:
                raise RuntimeError("the control server can only be started once")
            # Binding here rather than in uvicorn: a busy port fails in the caller with an
            # OSError (uvicorn would sys.exit its thread), and port 0 is resolved at once.
            sock = self._bind()
            self._port = sock.getsockname()[1]
            app = create_api(self._control, token=self._token, port_getter=lambda: self.port,
                             max_image_bytes=self._max_image_bytes,
                             max_json_bytes=self._max_json_bytes,
                             max_requests=self._max_requests,
                             status_max_age_s=self._status_max_age_s)
            # No limit_concurrency: uvicorn refuses past it in plain text; the guard bounds
            # requests instead, and answers JSON that the CLI prints.
            config = uvicorn.Config(
                app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                http="h11", loop="asyncio", server_header=False, date_header=False,
                timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S)
            server = _ThreadServer(config)
            thread = threading.Thread(target=self._serve, args=(server, sock),
                                      name="control-api", daemon=True)
            self._server, self._thread = server, thread
        thread.start()
        if not server.ready.wait(_START_TIMEOUT_S) or not server.started:
            self.close()
            sock.close()
            raise RuntimeError(f"the control API did not start on {self.url}")
        try:
            write_control_file(self.token_file,
                               ControlFile(url=self.url, token=self._token, pid=os.getpid()))
        except OSError as exc:
            self.close()
            raise RuntimeError(f"cannot write the control file {self.token_file}: {exc}") from exc
        self._wrote_file = True
        logger.info("control API at %s (control file %s)", self.url, self.token_file)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if sys.platform != "win32":
                # Lets a restarted daemon take its fixed port back while old connections
                # linger in TIME_WAIT. (On Windows this option would let others steal the port.)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._requested_port))
            # Room for a burst of clients connecting at once (the kernel caps it at somaxconn);
            # a full backlog drops connections, which clients retry only after a second.
            sock.listen(_BACKLOG)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _serve(server: _ThreadServer, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException:
            # SystemExit included: uvicorn exits on startup failures, which would otherwise
            # end this thread without a word.
            logger.exception("control API stopped with an error")
        finally:
            server.ready.set()  # never leave start() waiting on a server that died
            sock.close()

    def close(self) -> None:
        """Stop serving and remove the control file if it is still ours. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            server, thread = self._server, self._thread
        if server is not None:
            server.request_exit()
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT_S)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(_JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.warning("control API thread did not stop within %.0f s",
                               2 * _JOIN_TIMEOUT_S)
        if self._wrote_file:
            remove_control_file(self.token_file, self._token)
        if server is not None:
            logger.info("control API at %s closed", self.url)

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
