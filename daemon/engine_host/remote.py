"""An engine host on another machine (``run --engine-url``): dialled again after each loss."""

from __future__ import annotations

import logging
import ssl
import threading

from faceswap_cam.daemon.control.status import EngineHostState, EngineHostStatus
from faceswap_cam.daemon.engine_host.address import EngineUrl
from faceswap_cam.daemon.engine_host.proxy import (
    DIAL_TIMEOUT_S,
    EngineHostError,
    EngineHostProxy,
)

logger = logging.getLogger(__name__)


class RemoteEngineHost:
    """The processor's engine factory for a host elsewhere; says what happened to it."""

    def __init__(self, url: EngineUrl, token: str, *, frame_size: tuple[int, int] | None,
                 call_timeout_s: float, ssl_context: ssl.SSLContext | None = None,
                 dial_timeout_s: float = DIAL_TIMEOUT_S) -> None:
        self.url = url
        self._token = token
        self._frame_size = frame_size
        self._call_timeout_s = call_timeout_s
        self._ssl_context = ssl_context
        self._dial_timeout_s = dial_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._dials = 0
        self._state = EngineHostState.STARTING
        self._error = ""
        self._fix = ""

    def connect(self) -> EngineHostProxy:
        with self._lock:
            if self._closed:
                raise EngineHostError("the daemon is stopping")
            self._dials += 1
            self._state = EngineHostState.STARTING
            if not self._error:  # a failed dial's own fix says more, and stays
                self._fix = (f"connecting to the engine host at {self.url}; the camera shows "
                             "the fallback meanwhile. If this lasts, check that `faceswap-cam "
                             "engine serve` runs there and its port is reachable")
        try:
            proxy = EngineHostProxy.connect(self.url, self._token, frame_size=self._frame_size,
                                            call_timeout_s=self._call_timeout_s,
                                            ssl_context=self._ssl_context,
                                            open_timeout_s=self._dial_timeout_s,
                                            on_close=self._lost)
        except Exception as exc:  # EngineHostError says what to do; anything else is ours
            self._set(EngineHostState.FAILED, str(exc) or repr(exc), getattr(exc, "fix", "") or (
                "check the engine host's log; the camera shows the fallback meanwhile and "
                "the daemon dials again by itself"))
            raise
        self._set(EngineHostState.CONNECTED, "", "")
        logger.info("connected to the engine host at %s (%s)", self.url, proxy.engine_name)
        return proxy

    def _lost(self, hung: bool, failure: str) -> None:
        if hung:
            self._set(EngineHostState.RESTARTING,
                      f"the engine host at {self.url} did not answer in time",
                      "the daemon dials again by itself; restart the host if this repeats")
        elif failure:
            self._set(EngineHostState.RESTARTING, failure, "the daemon dials again by itself")

    def _set(self, state: EngineHostState, error: str, fix: str) -> None:
        with self._lock:
            if not self._closed:
                self._state = state
                if error or state is EngineHostState.CONNECTED:
                    self._error, self._fix = error, fix

    def report(self) -> EngineHostStatus:
        with self._lock:
            return EngineHostStatus(pid=None, url=str(self.url), state=self._state,
                                    restarts=max(0, self._dials - 1), error=self._error,
                                    fix=self._fix)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._state = EngineHostState.STOPPED
