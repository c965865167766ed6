"""Where the engine runs: inside the daemon, in a local child host, or on a host elsewhere."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from faceswap_cam.daemon.config import EngineHosting, Settings
from faceswap_cam.daemon.control.status import EngineHostStatus
from faceswap_cam.daemon.engine_host.address import EngineUrl, parse_engine_url
from faceswap_cam.daemon.engine_host.child import ChildEngineHost
from faceswap_cam.daemon.engine_host.remote import RemoteEngineHost
from faceswap_cam.daemon.engine_host.security import (
    SecurityError,
    find_pairing,
    read_token_file,
)
from faceswap_cam.models.engine import (
    EngineError,
    SwapEngine,
    available_engines,
    resolve_engine_name,
)

#: Engines cheap and safe enough to stay inside the daemon with ``--engine-host auto``.
STAND_IN_ENGINES = frozenset({"passthrough", "debug"})
#: The name the daemon shows for a remote host's engine when none was asked for.
REMOTE_ENGINE = "remote"


class EngineHostLink(Protocol):
    """A host the processor gets its engines from (``connect`` is its engine factory)."""

    def connect(self) -> SwapEngine: ...

    def report(self) -> EngineHostStatus: ...

    def close(self) -> None: ...


def plan_engine(settings: Settings, options: dict[str, Any]) -> tuple[str, EngineHostLink | None]:
    """The engine's name and the host that runs it (None: inside the daemon).

    A local child shares this machine's weights folder, so what can be known before starting
    it (an unknown engine, weights not downloaded) still stops the start with the fix. What only
    the host can find out (corrupt weights, no GPU, out of memory) leaves the camera in the
    fallback with the reason in the status, retried with backoff. A remote host's engine is
    only checked to exist: its weights are on the other machine.
    """
    if settings.engine_url:
        name = REMOTE_ENGINE if settings.engine == "auto" else _known(settings.engine)
        url, token = _remote(settings, parse_engine_url(settings.engine_url))
        return name, RemoteEngineHost(url, token, frame_size=settings.size,
                                      call_timeout_s=settings.engine_timeout_s)
    hosting = settings.engine_host
    if hosting is EngineHosting.INLINE or (hosting is EngineHosting.AUTO
                                           and settings.engine in STAND_IN_ENGINES):
        return resolve_engine_name(settings.engine, options), None
    if settings.engine == "auto":
        name = resolve_engine_name("auto", options)  # the best engine whose weights are here
        if hosting is EngineHosting.AUTO and name in STAND_IN_ENGINES:
            return name, None
    else:
        name = resolve_engine_name(settings.engine, options)
    if settings.engine_gpus > 1:
        from faceswap_cam.daemon.engine_host.distributed import group_problem

        # Known before any process starts: say it now rather than fail in the child.
        problem = group_problem(settings.engine_gpus, name, options, "--engine-gpus")
        if problem is not None:
            raise EngineError(problem)
    return name, ChildEngineHost(name, options, frame_size=settings.size,
                                 call_timeout_s=settings.engine_timeout_s,
                                 log_level=settings.log_level, gpus=settings.engine_gpus)


def _known(name: str) -> str:
    if name not in available_engines():
        raise EngineError(f"unknown engine {name!r}; available: "
                          f"{', '.join(['auto', *available_engines()])}")
    return name


def _remote(settings: Settings, url: EngineUrl) -> tuple[EngineUrl, str]:
    """The URL with the certificate to pin, and the token, for a host elsewhere.

    The token: --engine-token-file, else the URL's, else the one ``engine pair`` stored for
    this host:port. The fingerprint: the URL's, else the stored one; with one the daemon
    speaks TLS and pins it. A host on another machine without one is refused here, so a
    token never crosses a network in the clear.
    """
    try:  # a URL that carries both needs no stored pairing
        pairing = None if url.token and url.fingerprint else find_pairing(url.address)
    except SecurityError as exc:
        raise EngineError(str(exc)) from exc
    token = _token(settings, url.token or (pairing.token if pairing else None), url)
    fingerprint = url.fingerprint or (pairing.fingerprint if pairing else None)
    if fingerprint is None and not url.address.is_loopback:
        raise EngineError(f"no certificate fingerprint for the engine host at {url}: a host on "
                          "another machine speaks TLS; pair with the line its `faceswap-cam "
                          "engine serve` printed (faceswap-cam engine pair '...')")
    return replace(url, fingerprint=fingerprint), token


def _token(settings: Settings, known: str | None, url: EngineUrl) -> str:
    """The host's token: from --engine-token-file, else the URL's or the stored pairing's."""
    if settings.engine_token_file is not None:
        try:
            return read_token_file(settings.engine_token_file)
        except FileNotFoundError:
            raise EngineError(f"the engine token file {settings.engine_token_file} does not "
                              "exist") from None
        except SecurityError as exc:
            raise EngineError(f"the engine token file: {exc}") from exc
    if known:
        return known
    raise EngineError(f"no token for the engine host at {url}: pair with the line its "
                      "`faceswap-cam engine serve` printed (faceswap-cam engine pair '...'), "
                      "or give --engine-token-file PATH")
