"""The system-tray client: an icon that shows what the daemon is doing and a menu that drives it
through the control API (``faceswap-cam tray``).

The tray is its own process. It polls the daemon's status about once a second, follows the
daemon across restarts (a new daemon writes a new control file, so the client is rebuilt from
it), and never needs the daemon to be running: when none answers, the icon says so and the menu
offers to start one.

Everything with a side effect (the client, notifications, the browser, dialogs, starting the
daemon, the login service, the threads actions run on) is injected, so :class:`TrayController`
is tested without a display. pystray and Pillow are imported only where used: on a machine
without a display importing pystray can fail with errors that are not ImportError.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import functools
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from faceswap_cam.daemon.control.client import ControlClient, ControlError, DaemonNotRunning
from faceswap_cam.daemon.control.status import (
    CaptureState,
    DaemonState,
    DaemonStatus,
    EngineState,
    MicState,
    Showing,
    StatusError,
    parse_status,
)

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "DaemonClient",
    "LoginService",
    "TrayController",
    "TrayState",
    "classify",
    "icon_image",
    "main",
]

APP_TITLE = "FaceSwap Cam"
POLL_INTERVAL_S = 1.0
# Menu items are one line each; longer messages are wrapped over a few disabled items.
_LINE_WIDTH = 60
_MAX_LINES = 4
_IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.webp", "*.bmp")
_CLI_ADD_HINT = "faceswap-cam references add PATH"
_DIALOG_TIMEOUT_S = 3600.0


class TrayState(enum.StrEnum):
    SWAPPING = "swapping"
    PASSTHROUGH = "passthrough"  # warming up, swap off, engine not ready
    PAUSED = "paused"
    ERROR = "error"
    NOT_RUNNING = "not running"


_STATE_LABELS = {
    TrayState.SWAPPING: "Swapping faces",
    TrayState.PASSTHROUGH: "Passthrough",
    TrayState.PAUSED: "Camera paused",
    TrayState.ERROR: "Error",
    TrayState.NOT_RUNNING: "Not running",
}


class DaemonClient(Protocol):
    """What the tray uses of :class:`ControlClient` (tests pass an in-memory one)."""

    def status(self) -> dict[str, Any]: ...

    def references(self) -> list[dict[str, Any]]: ...

    def add_reference(self, path: Path | str, name: str | None = None) -> dict[str, Any]: ...

    def select_reference(self, name: str) -> list[dict[str, Any]]: ...

    def set_swap(self, enabled: bool) -> dict[str, Any]: ...

    def set_paused(self, paused: bool) -> dict[str, Any]: ...

    def set_ai_badge(self, enabled: bool) -> dict[str, Any]: ...

    def set_mic(self, enabled: bool) -> dict[str, Any]: ...

    def shutdown(self) -> None: ...


class LoginService(Protocol):
    """Starts FaceSwap Cam when the user logs in (systemd user unit, launch agent, ...).
    ``is_installed`` is called on every poll, so it must be cheap."""

    def is_installed(self) -> bool: ...

    def install(self) -> object: ...

    def uninstall(self) -> object: ...


Notify = Callable[[str, str], None]
Dispatch = Callable[[Callable[[], None]], None]


# --- what the status means --------------------------------------------------------------------


def engine_failed(status: DaemonStatus) -> bool:
    return (status.engine_state in (EngineState.FAILED, EngineState.HUNG)
            or status.state is DaemonState.ERROR)


def camera_lost(status: DaemonStatus) -> bool:
    return status.capture_state is CaptureState.LOST or bool(status.camera_error.strip())


def failed_outputs(status: DaemonStatus) -> tuple[str, ...]:
    """The outputs that stopped (a recording on a full disk); the others go on."""
    return tuple(failed.output for failed in status.output_errors)


def classify(status: DaemonStatus) -> tuple[TrayState, str]:
    """The tray state for a daemon status, and a short reason for passthrough."""
    if status.state is DaemonState.STOPPING:
        return TrayState.NOT_RUNNING, "stopping"
    if engine_failed(status) or camera_lost(status) or failed_outputs(status):
        return TrayState.ERROR, ""
    if status.paused or status.state is DaemonState.PAUSED:
        return TrayState.PAUSED, ""
    if not status.swap:
        return TrayState.PASSTHROUGH, "swap off"
    if status.state is DaemonState.STARTING:
        return TrayState.PASSTHROUGH, "starting"
    if status.engine == "passthrough":
        return TrayState.PASSTHROUGH, "no swap engine"
    if not status.reference:
        return TrayState.PASSTHROUGH, "no reference face"
    if status.engine_state is EngineState.LOADING:
        return TrayState.PASSTHROUGH, "engine loading"
    if status.engine_state is not EngineState.RUNNING:
        return TrayState.PASSTHROUGH, f"engine {status.engine_state}"
    # Before the first swapped frame the output is still the camera: the engine warms up.
    if status.showing not in (Showing.SWAPPED, Showing.HELD):
        return TrayState.PASSTHROUGH, "warming up"
    return TrayState.SWAPPING, ""


def _problem(status: DaemonStatus) -> tuple[str, str]:
    """(error, fix) to show; the daemon's own fix when it sends one."""
    if engine_failed(status):
        error = status.engine_error.strip() or "the face-swap engine stopped working"
        fix = (status.engine_fix.strip()
               or "FaceSwap Cam retries on its own; `faceswap-cam status` shows details")
        return error, fix
    if camera_lost(status):
        error = status.camera_error.strip() or "the camera stopped sending frames"
        fix = (status.camera_fix.strip()
               or "check the camera and close other apps using it; FaceSwap Cam reconnects "
                  "on its own")
        return f"camera lost: {error}", fix
    if status.output_errors:
        failed = status.output_errors[0]
        more = len(status.output_errors) - 1
        error = (failed.error.strip() or f"output {failed.output} stopped") + (
            f" (and {more} more output{'s' if more > 1 else ''})" if more else "")
        fix = failed.fix.strip() or "restart FaceSwap Cam to open the output again"
        return error, fix
    return "", ""


@dataclass(frozen=True)
class _View:
    """One poll's worth of what the tray shows."""

    state: TrayState = TrayState.NOT_RUNNING
    detail: str = ""
    status: DaemonStatus | None = None
    references: tuple[dict[str, Any], ...] = ()
    error: str = ""
    fix: str = ""
    engine_failed: bool = False
    camera_lost: bool = False
    failed_outputs: tuple[str, ...] = ()
    fps: float | None = None


def _view_of(status: DaemonStatus, references: list[dict[str, Any]]) -> _View:
    state, detail = classify(status)
    error, fix = _problem(status)
    return _View(state=state, detail=detail, status=status,
                 references=tuple(r for r in references if isinstance(r, dict)),
                 error=error, fix=fix, engine_failed=engine_failed(status),
                 camera_lost=camera_lost(status), failed_outputs=failed_outputs(status),
                 fps=status.publish_fps)


# --- the controller ---------------------------------------------------------------------------


def _start_daemon_process() -> subprocess.Popen[bytes]:
    # Its own session: the daemon outlives the tray, and a Ctrl-C meant for the tray's terminal
    # does not reach it.
    return subprocess.Popen([sys.executable, "-m", "faceswap_cam.daemon.cli", "run"],
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _in_thread(action: Callable[[], None]) -> None:
    # Menu callbacks arrive on the GUI thread: a slow request or an open dialog there would
    # freeze the whole tray.
    threading.Thread(target=action, name="tray-action", daemon=True).start()


class TrayController:
    """The tray's state and actions, apart from any GUI toolkit.

    ``refresh()`` polls once; ``start()`` polls in a background thread until ``stop()``.
    ``build_menu()`` returns a pystray menu of the last poll; ``attach(icon)`` keeps a pystray
    icon's image, tooltip and menu in step with the polls.
    """

    def __init__(
        self,
        client_factory: Callable[[], DaemonClient] = ControlClient.from_token_file,
        *,
        notify: Notify | None = None,
        open_url: Callable[[str], object] = webbrowser.open,
        choose_file: Callable[[], Path | str | None] | None = None,
        confirm: Callable[[str, str], bool] | None = None,
        start_daemon: Callable[[], object] = _start_daemon_process,
        service: LoginService | None = None,
        interval: float = POLL_INTERVAL_S,
        dispatch: Dispatch = _in_thread,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._notify_hook = notify
        self._open_url = open_url
        self._choose_file = choose_file or (lambda: choose_image_file(self.notify))
        self._confirm = confirm or ask_confirmation
        self._start_daemon = start_daemon
        self.service = service
        self.interval = interval
        self._dispatch = dispatch
        self._on_change = on_change

        self._lock = threading.Lock()  # the client and the view
        self._poll_lock = threading.Lock()  # one poll at a time (poller and actions)
        self._icon_lock = threading.Lock()
        self._client: DaemonClient | None = None
        self._view = _View()
        self._started: object | None = None  # what start_daemon returned, until it answers
        self._choosing = threading.Lock()  # one file dialog at a time
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._icon: Any = None
        self._shown: tuple[object, ...] | None = None

    # What the last poll saw.

    @property
    def state(self) -> TrayState:
        return self._view.state

    @property
    def detail(self) -> str:
        return self._view.detail

    @property
    def status(self) -> DaemonStatus | None:
        return self._view.status

    @property
    def references(self) -> list[dict[str, Any]]:
        return list(self._view.references)

    @property
    def error(self) -> str:
        return self._view.error

    @property
    def fix(self) -> str:
        return self._view.fix

    @property
    def connected(self) -> bool:
        return self._view.status is not None

    # Polling.

    def start(self) -> None:
        """Poll in a background thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._poll_loop, name="tray-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0 + self.interval)

    def poke(self) -> None:
        """Poll now rather than at the next tick (after an action changed something)."""
        self._wake.set()

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.refresh()
            except Exception:
                logger.exception("tray: polling the daemon failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def refresh(self) -> TrayState:
        """Poll the daemon once and update what the tray shows."""
        with self._poll_lock:
            view = self._poll()
            with self._lock:
                previous, self._view = self._view, view
            self._announce(previous, view)
            self._changed()
        return view.state

    def _poll(self) -> _View:
        for attempt in range(2):
            try:
                client = self._get_client()
                status = client.status()
                references = client.references()
            except DaemonNotRunning as exc:
                logger.debug("tray: daemon not running: %s", exc.reason)
                # The daemon may have restarted elsewhere: its new control file gets one try
                # in this same poll.
                if self._drop_client() and attempt == 0:
                    continue
                return _View(detail=self._not_running_detail())
            except ControlError as exc:
                # 401: a new daemon answers on the old port with a new token.
                if exc.status == 401 and self._drop_client() and attempt == 0:
                    continue
                return _View(state=TrayState.ERROR, error=f"the daemon did not answer: {exc}",
                             fix="restart FaceSwap Cam if this lasts")
            self._started = None
            try:
                report = parse_status(status)
            except StatusError as exc:
                return _View(state=TrayState.ERROR, error=str(exc),
                             fix="run the tray and the daemon from the same FaceSwap Cam "
                                 "installation")
            return _view_of(report, references if isinstance(references, list) else [])
        raise AssertionError("unreachable")  # pragma: no cover

    def _not_running_detail(self) -> str:
        started = self._started
        if started is None:
            return ""
        poll = getattr(started, "poll", None)
        code = poll() if callable(poll) else None
        if code is None:
            return "starting"
        self._started = None
        if code != 0:
            self.notify(f"{APP_TITLE} could not start",
                        f"It exited with code {code}; run `faceswap-cam run` in a terminal "
                        "to see why.")
        return ""

    def _get_client(self) -> DaemonClient:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def _drop_client(self) -> bool:
        """Forget the client; whether there was one (else the factory itself failed)."""
        with self._lock:
            had, self._client = self._client is not None, None
        return had

    def _announce(self, previous: _View, view: _View) -> None:
        # On the transition only: a failure that lasts is not news at every poll.
        if view.engine_failed and not previous.engine_failed:
            self.notify("Face swap failed", _with_fix(view.error, view.fix))
        if view.camera_lost and view.status is not None and not previous.camera_lost:
            reason = view.status.camera_error.strip() or "the camera stopped sending frames"
            self.notify("Camera lost", f"{reason}. FaceSwap Cam reconnects when it can.")
        if view.status is not None:
            for failed in view.status.output_errors:
                if failed.output not in previous.failed_outputs:
                    self.notify("Output stopped", _with_fix(failed.error, failed.fix))

    # The GUI.

    def attach(self, icon: Any) -> None:
        """Keep this pystray icon in step with the polls (image, tooltip, menu)."""
        with self._icon_lock:
            self._icon = icon
            self._shown = None
        self._changed()

    def _changed(self) -> None:
        with self._icon_lock:
            icon = self._icon
            if icon is not None:
                view = self._view
                shown = (view.state, self.title(), self._menu_key())
                previous = self._shown
                self._shown = shown
                try:
                    if previous is None or previous[0] != shown[0]:
                        icon.icon = icon_image(view.state)
                    if previous is None or previous[1] != shown[1]:
                        icon.title = shown[1]
                    # Rebuilding a menu can close it under the user's pointer: only on change.
                    if previous is None or previous[2] != shown[2]:
                        icon.menu = self.build_menu()
                except Exception:
                    logger.exception("tray: updating the icon failed")
        if self._on_change is not None:
            self._on_change()

    def title(self) -> str:
        """The icon's tooltip."""
        view = self._view
        parts = [_state_text(view)]
        status = view.status
        if view.state is TrayState.SWAPPING and status is not None and status.reference:
            parts.append(status.reference)
        if view.fps is not None and status is not None:
            parts.append(f"{view.fps:.0f} fps")
        return f"{APP_TITLE}: " + ", ".join(parts)

    def status_lines(self) -> list[str]:
        """The menu's status block: state, reference and fps, the error and its fix."""
        view = self._view
        lines = [f"{APP_TITLE}: {_state_text(view)}"]
        status = view.status
        if status is not None:
            reference = status.reference or "none"
            fps = "--" if view.fps is None else f"{view.fps:.0f}"
            lines.append(f"Reference: {reference} · {fps} fps")
            reference_error = status.reference_error.strip()
            if reference_error:
                lines += _wrapped(f"Reference refused: {reference_error}")
            mic = status.mic
            if mic is not None and mic.state in (MicState.NO_INPUT, MicState.NO_SERVER):
                # The camera goes on; the voice is what the user must fix.
                lines += _wrapped(f"Mic: {mic.detail or mic.state}")
                if mic.fix:
                    lines += _wrapped(f"Mic fix: {mic.fix}")
        if view.error:
            lines += _wrapped(f"Error: {view.error}")
        if view.fix:
            lines += _wrapped(f"Fix: {view.fix}")
        if view.state is TrayState.NOT_RUNNING and not view.detail:
            lines += _wrapped("Start it from this menu or with `faceswap-cam run`")
        return lines

    def _login_installed(self) -> bool | None:
        if self.service is None:
            return None
        try:
            return bool(self.service.is_installed())
        except Exception:
            logger.exception("tray: asking the login service failed")
            return None

    def _menu_key(self) -> tuple[object, ...]:
        view = self._view
        status = view.status
        references = tuple((r.get("name"), r.get("selected")) for r in view.references)
        switches = (None if status is None
                    else (status.swap, status.paused, status.ai_badge, status.mic is not None,
                          status.preview_url))
        return (tuple(self.status_lines()), references, switches, self.connected,
                self._login_installed())

    def build_menu(self) -> Any:
        """A ``pystray.Menu`` of the last poll."""
        pystray = load_pystray()
        item, menu = pystray.MenuItem, pystray.Menu
        view = self._view
        status = view.status
        connected = self.connected

        def const(value: object) -> Callable[[Any], object]:
            return lambda _item: value

        entries: list[Any] = [item(line, None, enabled=False) for line in self.status_lines()]
        entries.append(menu.SEPARATOR)

        faces: list[Any] = []
        for reference in view.references:
            name = str(reference.get("name", ""))
            faces.append(item(name, self._action(functools.partial(self.select_reference, name)),
                              checked=const(bool(reference.get("selected"))), radio=True,
                              enabled=connected))
        if not faces:
            text = "No reference faces yet" if connected else f"{APP_TITLE} is not running"
            faces.append(item(text, None, enabled=False))
        faces += [menu.SEPARATOR,
                  item("Add reference face…", self._action(self.add_reference),
                       enabled=connected)]
        entries.append(item("Reference face", menu(*faces)))

        entries.append(item("Swap faces", self._action(self.toggle_swap),
                            checked=const(status is not None and status.swap),
                            enabled=connected))
        entries.append(item("Pause camera", self._action(self.toggle_pause),
                            checked=const(status is not None and status.paused),
                            enabled=connected))
        entries.append(item("FaceSwap Mic (voice in sync)", self._action(self.toggle_mic),
                            checked=const(status is not None and status.mic is not None),
                            enabled=connected))
        entries.append(item('Mark camera "AI altered"', self._action(self.toggle_ai_badge),
                            checked=const(status is not None and status.ai_badge),
                            enabled=connected))
        entries.append(item("Open preview", self._action(self.open_preview),
                            enabled=status is not None and bool(status.preview_url)))
        entries.append(menu.SEPARATOR)

        installed = self._login_installed()
        if installed is None:
            entries.append(item("Start at login (not available yet)", None,
                                checked=const(False), enabled=False))
        else:
            entries.append(item("Start at login", self._action(self.toggle_login),
                                checked=const(installed)))
        if not connected and view.state is TrayState.NOT_RUNNING:
            starting = view.detail == "starting"
            entries.append(item("Starting…" if starting else "Start daemon",
                                self._action(self.start_daemon), enabled=not starting))
        entries.append(menu.SEPARATOR)
        entries.append(item("Quit tray", self.quit))
        if connected:
            entries.append(item(f"Stop {APP_TITLE} and quit",
                                self._action(self.stop_daemon_and_quit)))
        return menu(*entries)

    def _action(self, function: Callable[[], None]) -> Callable[[], None]:
        # Zero arguments: pystray inspects the arity and calls it as action().
        def run() -> None:
            self._dispatch(lambda: self._guarded(function))

        return run

    def _guarded(self, function: Callable[[], None]) -> None:
        try:
            function()
        except DaemonNotRunning:
            self._drop_client()
            self.notify(f"{APP_TITLE} is not running",
                        "Start it from the tray menu or with `faceswap-cam run`.")
            self.poke()
        except ControlError as exc:
            if exc.status == 401:
                self._drop_client()
            self.notify(APP_TITLE, exc.message)
            self.poke()
        except Exception as exc:
            logger.exception("tray: action failed")
            self.notify(APP_TITLE, f"{type(exc).__name__}: {exc}")

    def notify(self, title: str, message: str) -> None:
        """Show a desktop notification (the injected one, else the icon's, else the log)."""
        if self._notify_hook is not None:
            self._notify_hook(title, message)
            return
        icon = self._icon
        if icon is not None and getattr(icon, "HAS_NOTIFICATION", False):
            try:
                icon.notify(message, title)
                return
            except Exception:
                logger.debug("tray: notification failed", exc_info=True)
        logger.warning("%s: %s", title, message)

    # Actions (run through dispatch; each may raise DaemonNotRunning or ControlError).

    def select_reference(self, name: str) -> None:
        self._get_client().select_reference(name)
        self.refresh()

    def add_reference(self) -> None:
        """Ask for an image file and add it to the library (selected if none is)."""
        if not self._choosing.acquire(blocking=False):
            return  # a dialog is open already
        try:
            chosen = self._choose_file()
        finally:
            self._choosing.release()
        if not chosen:
            return
        path = Path(chosen)
        client = self._get_client()
        try:
            # Named after the file, as the library names files it adds itself (the upload
            # alone carries no name).
            entry = client.add_reference(path, name=path.stem)
        except ControlError as exc:
            self.notify("Reference face not added", exc.message)
            return
        except OSError as exc:
            self.notify("Reference face not added", f"cannot read {path}: {exc.strerror or exc}")
            return
        name = str(entry.get("name", path.stem))
        status = self._view.status
        if status is None or not status.reference:
            client.select_reference(name)
        skipped = str(entry.get("person_check_skipped") or "")
        self.notify("Reference face added",
                    f"{name} (not checked for exactly one person: {skipped})" if skipped
                    else name)
        self.refresh()

    def toggle_swap(self) -> None:
        status = self._view.status
        self._get_client().set_swap(status is None or not status.swap)
        self.refresh()

    def toggle_pause(self) -> None:
        status = self._view.status
        self._get_client().set_paused(status is None or not status.paused)
        self.refresh()

    def toggle_mic(self) -> None:
        status = self._view.status
        self._get_client().set_mic(status is None or status.mic is None)
        self.refresh()

    def toggle_ai_badge(self) -> None:
        status = self._view.status
        self._get_client().set_ai_badge(status is None or not status.ai_badge)
        self.refresh()

    def open_preview(self) -> None:
        status = self._view.status
        if status is not None and status.preview_url:
            self._open_url(status.preview_url)

    def toggle_login(self) -> None:
        service = self.service
        if service is None:
            return
        if service.is_installed():
            service.uninstall()
        else:
            service.install()
        self._changed()

    def start_daemon(self) -> None:
        try:
            self._started = self._start_daemon()
        except OSError as exc:
            self.notify(f"{APP_TITLE} could not start", str(exc))
            return
        # Shown as "starting" until it answers (or exits).
        with self._lock:
            self._view = _View(detail="starting")
        self._changed()
        self.poke()

    def quit(self) -> None:
        """Close the tray; the daemon keeps running."""
        # No join here: this runs on the GUI thread, and the poller may be inside a request.
        self._stopping.set()
        self._wake.set()
        icon = self._icon
        if icon is not None:
            icon.stop()

    def stop_daemon_and_quit(self) -> None:
        if not self._confirm(f"Stop {APP_TITLE}?",
                             "The virtual camera stops for every app that uses it."):
            return
        with contextlib.suppress(DaemonNotRunning):  # already gone: what the user asked for
            self._get_client().shutdown()
        self.quit()


def _state_text(view: _View) -> str:
    label = _STATE_LABELS[view.state]
    return f"{label} ({view.detail})" if view.detail else label


def _wrapped(text: str) -> list[str]:
    lines = textwrap.wrap(" ".join(text.split()), _LINE_WIDTH) or [""]
    if len(lines) > _MAX_LINES:
        lines = [*lines[:_MAX_LINES - 1], textwrap.shorten(" ".join(lines[_MAX_LINES - 1:]),
                                                           _LINE_WIDTH, placeholder=" …")]
    return lines


def _with_fix(error: str, fix: str) -> str:
    return f"{error}. Fix: {fix}" if fix else error


# --- the icon ---------------------------------------------------------------------------------

_COLOURS: dict[TrayState, tuple[int, int, int, int]] = {
    TrayState.SWAPPING: (46, 164, 79, 255),
    TrayState.PASSTHROUGH: (140, 140, 140, 255),
    TrayState.PAUSED: (45, 110, 220, 255),
    TrayState.ERROR: (215, 45, 45, 255),
    TrayState.NOT_RUNNING: (80, 80, 80, 255),
}


@functools.lru_cache(maxsize=16)
def _icon_image(state: TrayState, size: int) -> Image.Image:
    from PIL import Image, ImageDraw

    # Drawn 4x larger and scaled down: Pillow's shapes are not antialiased.
    scale = 4
    big = size * scale
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    margin = big // 16
    box = (margin, margin, big - margin - 1, big - margin - 1)
    colour = _COLOURS[state]
    white = (255, 255, 255, 255)
    if state is TrayState.NOT_RUNNING:
        draw.ellipse(box, outline=colour, width=big // 10)
    else:
        draw.ellipse(box, fill=colour)
    unit = big / 16
    centre = big / 2
    if state is TrayState.PAUSED:
        for x in (centre - 2.5 * unit, centre + 1 * unit):
            draw.rectangle((x, centre - 3.5 * unit, x + 1.5 * unit, centre + 3.5 * unit),
                           fill=white)
    elif state is TrayState.ERROR:
        draw.rectangle((centre - unit, centre - 4.5 * unit, centre + unit, centre + 1.5 * unit),
                       fill=white)
        draw.ellipse((centre - unit, centre + 2.5 * unit, centre + unit, centre + 4.5 * unit),
                     fill=white)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def icon_image(state: TrayState | str, size: int = 64) -> Image.Image:
    """The tray icon for a state: a circle, green swapping, grey passthrough, blue paused (with
    a pause sign), red error (with "!"), an outline when the daemon is not running."""
    # A copy: the cached image must not change under a caller that draws on it.
    return _icon_image(TrayState(state), size).copy()


# --- dialogs ----------------------------------------------------------------------------------


def _run_dialog(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=_DIALOG_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("tray: %s failed: %s", command[0], exc)
        return None


def _native_choose() -> tuple[bool, str | None]:
    """(whether a native dialog ran, the chosen path or None when cancelled)."""
    title = "Choose a reference face"
    patterns = " ".join(_IMAGE_PATTERNS)
    commands: list[list[str]] = []
    if sys.platform == "darwin":
        commands.append(["osascript", "-e",
                         f'POSIX path of (choose file of type {{"public.image"}} '
                         f'with prompt "{title}")'])
    else:
        commands.append(["zenity", "--file-selection", f"--title={title}",
                         f"--file-filter=Images | {patterns}"])
        commands.append(["kdialog", "--title", title, "--getopenfilename", str(Path.home()),
                         f"Images ({patterns})"])
    for command in commands:
        if shutil.which(command[0]) is None:
            continue
        result = _run_dialog(command)
        if result is None:
            continue
        chosen = result.stdout.strip()
        # Non-zero is "cancelled" for all of them.
        return True, chosen if result.returncode == 0 and chosen else None
    return False, None


def _tk_choose() -> tuple[bool, str | None]:
    try:
        import tkinter
        from tkinter import filedialog

        root = tkinter.Tk()
    except Exception as exc:  # no tkinter, or no display for it (TclError)
        logger.debug("tray: tkinter unavailable: %s", exc)
        return False, None
    try:
        root.withdraw()
        # Else the dialog can open behind every other window, far from the tray.
        root.attributes("-topmost", True)
        chosen = filedialog.askopenfilename(
            parent=root, title="Choose a reference face",
            filetypes=[("Images", " ".join(_IMAGE_PATTERNS)), ("All files", "*")])
    finally:
        root.destroy()
    return True, str(chosen) if chosen else None


def choose_image_file(notify: Notify) -> str | None:
    """Ask the user for an image file: the desktop's own dialog where there is one (zenity,
    kdialog, macOS), else tkinter's, else a notification pointing at the CLI."""
    # Native dialogs first: they look like the desktop, and run as their own process, so no Tk
    # shares this process with the tray's toolkit (and on macOS Tk could not run off the main
    # thread at all).
    choosers: list[Callable[[], tuple[bool, str | None]]] = [_native_choose]
    if sys.platform != "darwin":
        choosers.append(_tk_choose)
    for chooser in choosers:
        ran, chosen = chooser()
        if ran:
            return chosen
    notify("No file dialog available",
           f"Add a reference face from a terminal: `{_CLI_ADD_HINT}`")
    return None


def ask_confirmation(title: str, message: str) -> bool:
    """Ask yes/no with the desktop's dialog; without any dialog, yes (the user did pick the
    menu item that asks for it)."""
    commands: list[list[str]] = []
    if sys.platform == "darwin":
        commands.append(["osascript", "-e",
                         f'display dialog "{message}" with title "{title}" '
                         'buttons {"Cancel", "OK"} default button "OK"'])
    else:
        commands.append(["zenity", "--question", f"--title={title}", f"--text={message}"])
        commands.append(["kdialog", "--title", title, "--yesno", message])
    for command in commands:
        if shutil.which(command[0]) is None:
            continue
        result = _run_dialog(command)
        if result is not None:
            return result.returncode == 0
    if sys.platform != "darwin":
        try:
            import tkinter
            from tkinter import messagebox

            root = tkinter.Tk()
        except Exception:
            root = None
        if root is not None:
            try:
                root.withdraw()
                root.attributes("-topmost", True)
                return bool(messagebox.askyesno(title, message, parent=root))
            finally:
                root.destroy()
    logger.info("tray: no dialog to confirm %r; going ahead", title)
    return True


# --- running the tray -------------------------------------------------------------------------


class NoTray(RuntimeError):
    """No tray icon can be shown here; the message says why and what to install."""


def _backend_name() -> str:
    chosen = os.environ.get("PYSTRAY_BACKEND")
    if chosen:
        return chosen
    if sys.platform == "darwin":
        return "darwin"
    if sys.platform == "win32":
        return "win32"
    return "appindicator, gtk or xorg"


_LINUX_HELP = (
    "On Linux the tray menu needs the appindicator backend: install "
    "gir1.2-ayatanaappindicator3-0.1 and python3-gi (PyGObject; in a virtual environment, "
    "`pip install PyGObject` or create it with --system-site-packages), or GTK 3 for the gtk "
    "backend. The xorg backend has no menus. On GNOME, also enable the AppIndicator extension "
    "(gnome-shell-extension-appindicator). PYSTRAY_BACKEND=appindicator|gtk|xorg picks one."
)


def _no_tray_message(reason: str) -> str:
    lines = [f"faceswap-cam tray: no system tray can be shown ({reason})."]
    if sys.platform.startswith("linux"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            lines.append("There is no graphical session here (DISPLAY and WAYLAND_DISPLAY are "
                         "unset).")
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if not (os.environ.get("DBUS_SESSION_BUS_ADDRESS")
                or (runtime and Path(runtime, "bus").exists())):
            lines.append("There is no D-Bus session bus, which tray icons and notifications "
                         "need: start the tray from inside the desktop session.")
        lines.append(_LINUX_HELP)
    lines.append("The daemon does not need the tray: the command line still works, e.g. "
                 "`faceswap-cam status`.")
    return "\n".join(lines)


def load_pystray() -> ModuleType:
    """Import pystray (its backend is chosen at import: $PYSTRAY_BACKEND, else the platform's).
    Raises :class:`NoTray` saying what is missing."""
    try:
        import pystray
    except ModuleNotFoundError as exc:
        if exc.name in ("pystray", "PIL", "six"):
            raise NoTray(f"the tray's packages are missing ({exc.name}): install them with "
                         "`pip install 'faceswap-cam[tray]'`") from exc
        raise NoTray(f"the {_backend_name()} backend cannot load: {exc}") from exc
    except Exception as exc:
        # Without a display the xorg backend raises Xlib's DisplayNameError, GTK its own.
        raise NoTray(f"the {_backend_name()} backend cannot load: "
                     f"{type(exc).__name__}: {exc}") from exc
    module: ModuleType = pystray
    return module


def _release_setup_thread(icon: Any) -> None:
    """pystray's setup thread (not a daemon thread) waits for a loop that failed to start,
    and would keep the process from exiting: hand it the go it waits for (private API, so
    only where it is as expected)."""
    waiting = getattr(icon, "_Icon__queue", None)
    if waiting is not None and callable(getattr(waiting, "put", None)):
        waiting.put(False)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="faceswap-cam tray",
        description="Show FaceSwap Cam in the system tray: its state, the reference face, swap "
                    "and pause switches, the preview. It talks to the running daemon and "
                    "follows it across restarts.")
    parser.add_argument("--control-file", type=Path,
                        help="the daemon's control file (default: where daemons write it)")
    parser.add_argument("--interval", type=float, default=POLL_INTERVAL_S,
                        help="seconds between status polls (default %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tray until the user quits it. 1 when no tray can be shown here."""
    args = _parse(argv)
    try:
        pystray = load_pystray()
    except NoTray as exc:
        print(_no_tray_message(str(exc)), file=sys.stderr)  # noqa: T201
        return 1
    backend = pystray.Icon.__module__.rpartition("._")[2]
    problem = ("the dummy backend shows nothing" if pystray.Icon.__module__ == "pystray._base"
               else f"the {backend} backend has no menus"
               if not getattr(pystray.Icon, "HAS_MENU", True) else "")
    if problem:
        print(_no_tray_message(problem), file=sys.stderr)  # noqa: T201
        return 1
    if "GNOME" in os.environ.get("XDG_CURRENT_DESKTOP", "").upper():
        logger.info("on GNOME the tray icon shows only with the AppIndicator extension enabled")

    control_file: Path | None = args.control_file

    def client_factory() -> DaemonClient:
        return ControlClient.from_token_file(control_file)

    from faceswap_cam.daemon.ops import service as login_service

    # The module's install/uninstall/is_installed are the LoginService the menu drives.
    controller = TrayController(client_factory, interval=max(0.2, args.interval),
                                service=login_service)
    controller.refresh()
    icon = pystray.Icon("faceswap-cam", icon_image(controller.state), controller.title(),
                        menu=controller.build_menu())
    controller.attach(icon)

    failed = threading.Event()

    def setup(icon: Any) -> None:
        if failed.is_set():
            return
        icon.visible = True
        controller.start()

    try:
        icon.run(setup=setup)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        # E.g. GTK failing to open the display only once the loop starts.
        logger.debug("tray: the icon failed", exc_info=True)
        failed.set()
        _release_setup_thread(icon)
        print(_no_tray_message(f"{type(exc).__name__}: {exc}"), file=sys.stderr)  # noqa: T201
        return 1
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
