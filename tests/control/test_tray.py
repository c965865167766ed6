"""The tray client without a display: the controller against an in-memory daemon (its menu as
pystray Menu/MenuItem objects, its state, reconnects, notifications and actions), once over a
real ControlServer on loopback, and ``main()``'s answer where no tray can be shown.

pystray picks its backend when first imported; the dummy one imports anywhere. Icon.run() is
never called here: it blocks.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from faceswap_cam.daemon.control.client import ControlClient, ControlError, DaemonNotRunning
from faceswap_cam.daemon.control.server import ControlServer
from tests.fake_daemon import PNG_MAGIC, PREVIEW_URL, threads_stop_but_workers, write_png
from tests.fake_daemon import InMemoryDaemon as FakeDaemon

os.environ["PYSTRAY_BACKEND"] = "dummy"
pystray = pytest.importorskip("pystray", reason="the tray extra is not installed")
pytest.importorskip("PIL", reason="the tray extra is not installed")

from pystray._base import Icon as BaseIcon  # noqa: E402

from faceswap_cam.tray.app import (  # noqa: E402
    DaemonClient,
    TrayController,
    TrayState,
    icon_image,
)

STOP_ITEM = "Stop FaceSwap Cam and quit"
REPO = Path(__file__).resolve().parents[2]


# --- an in-memory daemon and a client for it --------------------------------------------------


class FakeClient:
    """ControlClient's methods over a FakeDaemon, failing the way ControlClient does."""

    def __init__(self, daemon: FakeDaemon) -> None:
        self.daemon = daemon
        self.down = False
        self.refuse_token = False
        self.calls: list[tuple[str, Any]] = []

    def _check(self) -> None:
        if self.down:
            raise DaemonNotRunning("fake: nothing listens")
        if self.refuse_token:
            raise ControlError(401, "the daemon refused the token")

    def status(self) -> dict[str, Any]:
        self._check()
        return self.daemon.status().model_dump(mode="json")

    def references(self) -> list[dict[str, Any]]:
        self._check()
        return self.daemon.list_references()

    def add_reference(self, path: Path | str, name: str | None = None) -> dict[str, Any]:
        self._check()
        self.calls.append(("add_reference", str(path)))
        data = Path(path).read_bytes()
        try:
            return self.daemon.add_reference(name, data)
        except ValueError as exc:
            raise ControlError(422, str(exc)) from None

    def select_reference(self, name: str) -> list[dict[str, Any]]:
        self._check()
        self.calls.append(("select_reference", name))
        try:
            self.daemon.select_reference(name)
        except KeyError as exc:
            raise ControlError(404, str(exc.args[0])) from None
        return self.daemon.list_references()

    def set_swap(self, enabled: bool) -> dict[str, Any]:
        self._check()
        self.calls.append(("set_swap", enabled))
        self.daemon.set_swap(enabled)
        return self.daemon.status().model_dump(mode="json")

    def set_paused(self, paused: bool) -> dict[str, Any]:
        self._check()
        self.calls.append(("set_paused", paused))
        self.daemon.set_paused(paused)
        return self.daemon.status().model_dump(mode="json")

    def set_mic(self, enabled: bool) -> dict[str, Any]:
        self._check()
        self.calls.append(("set_mic", enabled))
        self.daemon.set_mic(enabled)
        return self.daemon.status().model_dump(mode="json")

    def set_ai_badge(self, enabled: bool) -> dict[str, Any]:
        self._check()
        self.calls.append(("set_ai_badge", enabled))
        self.daemon.set_ai_badge(enabled)
        return self.daemon.status().model_dump(mode="json")

    def shutdown(self) -> None:
        self._check()
        self.calls.append(("shutdown", None))
        self.daemon.shutdown()


class Factory:
    """A client factory that plays its outcomes in order (the last one repeats)."""

    def __init__(self, *outcomes: FakeClient | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> FakeClient:
        self.calls += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class FakeIcon:
    """What the controller uses of a pystray Icon."""

    HAS_NOTIFICATION = True

    def __init__(self) -> None:
        self.icon: Any = None
        self.title = ""
        self._menu: Any = None
        self.menu_sets = 0
        self.stopped = False
        self.notes: list[tuple[str, str]] = []

    @property
    def menu(self) -> Any:
        return self._menu

    @menu.setter
    def menu(self, value: Any) -> None:
        self._menu = value
        self.menu_sets += 1

    def stop(self) -> None:
        self.stopped = True

    def notify(self, message: str, title: str | None = None) -> None:
        self.notes.append((title or "", message))


class Tray:
    """A controller wired to recorders instead of the desktop."""

    def __init__(self, factory: Callable[[], DaemonClient], **options: Any) -> None:
        self.notes: list[tuple[str, str]] = []
        self.opened: list[str] = []
        self.chosen: Path | None = None
        self.answer = True
        self.confirms: list[str] = []
        self.starts = 0
        self.process: object = None  # what start_daemon returns
        self.controller = TrayController(
            factory, notify=lambda title, message: self.notes.append((title, message)),
            open_url=self.opened.append, choose_file=lambda: self.chosen,
            confirm=self._confirm, start_daemon=self._start,
            dispatch=lambda action: action(), **options)

    def _confirm(self, title: str, message: str) -> bool:
        self.confirms.append(title)
        return self.answer

    def _start(self) -> object:
        self.starts += 1
        return self.process

    def menu(self) -> Any:
        return self.controller.build_menu()


def state_of(tray: Tray) -> TrayState:
    # A call, not the property: mypy would carry a narrowed state across the clicks.
    return tray.controller.state


def texts(menu: Any) -> list[str]:
    return [item.text for item in menu]


def find(menu: Any, text: str) -> Any:
    matches = [item for item in menu if item.text == text]
    assert matches, f"no item {text!r} in {texts(menu)}"
    return matches[0]


def faces(menu: Any) -> Any:
    return find(menu, "Reference face").submenu


def click(menu: Any, text: str) -> None:
    find(menu, text)(None)


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
def client(daemon: FakeDaemon) -> FakeClient:
    return FakeClient(daemon)


@pytest.fixture
def tray(client: FakeClient) -> Tray:
    tray = Tray(Factory(client))
    tray.controller.refresh()
    return tray


@pytest.fixture
def png(tmp_path: Path) -> Path:
    return write_png(tmp_path / "bob.png", 64)


# --- the menu ---------------------------------------------------------------------------------


def test_menu_while_swapping(tray: Tray) -> None:
    assert tray.controller.state == TrayState.SWAPPING
    assert str(tray.controller.state) == "swapping"
    menu = tray.menu()
    status_items = [item for item in menu if not item.enabled][:2]
    assert [item.text for item in status_items] == ["FaceSwap Cam: Swapping faces",
                                                    "Reference: alice · 30 fps"]
    alice = find(faces(menu), "alice")
    assert (alice.checked, alice.radio, alice.enabled) == (True, True, True)
    assert find(faces(menu), "Add reference face…").enabled
    swap, pause = find(menu, "Swap faces"), find(menu, "Pause camera")
    assert (swap.checked, swap.enabled, pause.checked, pause.enabled) == (True, True, False, True)
    assert find(menu, "Open preview").enabled
    login = find(menu, "Start at login (not available yet)")
    assert (login.enabled, login.checked) == (False, False)
    assert "Start daemon" not in texts(menu)
    assert find(menu, "Quit tray").enabled and find(menu, STOP_ITEM).enabled


def test_reference_submenu_follows_the_library(tray: Tray, client: FakeClient,
                                               daemon: FakeDaemon) -> None:
    daemon.add_reference("bob", PNG_MAGIC)
    assert texts(faces(tray.menu()))[0] == "alice"  # the menu shows the last poll
    tray.controller.refresh()
    submenu = faces(tray.menu())
    assert [(item.text, item.checked) for item in submenu if item.radio] == [
        ("alice", True), ("bob", False)]

    click(submenu, "bob")
    assert ("select_reference", "bob") in client.calls
    submenu = faces(tray.menu())
    assert [(item.text, item.checked) for item in submenu if item.radio] == [
        ("alice", False), ("bob", True)]
    assert "Reference: bob · 30 fps" in texts(tray.menu())


def test_empty_library(client: FakeClient, daemon: FakeDaemon) -> None:
    daemon.library.clear()
    daemon.selected = None
    tray = Tray(Factory(client))
    tray.controller.refresh()
    assert (tray.controller.state, tray.controller.detail) == (TrayState.PASSTHROUGH,
                                                               "no reference face")
    submenu = faces(tray.menu())
    assert not find(submenu, "No reference faces yet").enabled


def test_swap_and_pause_switch_through_the_api(tray: Tray, client: FakeClient,
                                               daemon: FakeDaemon) -> None:
    click(tray.menu(), "Swap faces")
    assert client.calls[-1] == ("set_swap", False) and daemon.status().swap is False
    assert (tray.controller.state, tray.controller.detail) == (TrayState.PASSTHROUGH, "swap off")
    assert find(tray.menu(), "Swap faces").checked is False
    click(tray.menu(), "Swap faces")
    assert daemon.status().swap is True
    assert state_of(tray) == TrayState.SWAPPING

    click(tray.menu(), "Pause camera")
    assert client.calls[-1] == ("set_paused", True)
    assert state_of(tray) == TrayState.PAUSED
    assert find(tray.menu(), "Pause camera").checked is True
    click(tray.menu(), "Pause camera")
    assert daemon.status().paused is False
    assert state_of(tray) == TrayState.SWAPPING


def test_open_preview(tray: Tray, daemon: FakeDaemon) -> None:
    click(tray.menu(), "Open preview")
    assert tray.opened == [PREVIEW_URL]
    daemon.preview_url = None
    tray.controller.refresh()
    assert find(tray.menu(), "Open preview").enabled is False


def test_start_at_login_uses_the_service(client: FakeClient) -> None:
    class Service:
        installed = False

        def is_installed(self) -> bool:
            return self.installed

        def install(self) -> None:
            self.installed = True

        def uninstall(self) -> None:
            self.installed = False

    service = Service()
    tray = Tray(Factory(client), service=service)
    tray.controller.refresh()
    item = find(tray.menu(), "Start at login")
    assert (item.enabled, item.checked) == (True, False)
    item(None)
    assert service.installed and find(tray.menu(), "Start at login").checked is True
    click(tray.menu(), "Start at login")
    assert not service.installed


# --- state ------------------------------------------------------------------------------------


def _failed(d: FakeDaemon) -> None:
    d.state, d.engine_state, d.engine_error = "error", "failed", "CUDA out of memory"


def _lost(d: FakeDaemon) -> None:
    d.capture_state, d.camera_error = "lost", "/dev/video0 disappeared"


@pytest.mark.parametrize(("change", "state", "detail"), [
    (lambda d: None, TrayState.SWAPPING, ""),
    (lambda d: setattr(d, "showing", "held"), TrayState.SWAPPING, ""),
    (lambda d: setattr(d, "swap", False), TrayState.PASSTHROUGH, "swap off"),
    (lambda d: setattr(d, "engine_state", "loading"), TrayState.PASSTHROUGH, "engine loading"),
    (lambda d: setattr(d, "showing", "passthrough"), TrayState.PASSTHROUGH, "warming up"),
    (lambda d: setattr(d, "state", "starting"), TrayState.PASSTHROUGH, "starting"),
    (lambda d: setattr(d, "paused", True), TrayState.PAUSED, ""),
    (_failed, TrayState.ERROR, ""),
    (lambda d: setattr(d, "engine_state", "hung"), TrayState.ERROR, ""),
    (_lost, TrayState.ERROR, ""),
    (lambda d: setattr(d, "state", "stopping"), TrayState.NOT_RUNNING, "stopping"),
])
def test_state_follows_the_daemon(daemon: FakeDaemon, client: FakeClient,
                                  change: Callable[[FakeDaemon], None], state: TrayState,
                                  detail: str) -> None:
    change(daemon)
    tray = Tray(Factory(client))
    assert tray.controller.refresh() == state
    assert tray.controller.detail == detail
    heading = texts(tray.menu())[0]
    assert heading.startswith("FaceSwap Cam: ")
    assert not detail or f"({detail})" in heading
    # Even a stopping daemon answers: it is not offered to be started again.
    assert tray.controller.connected and "Start daemon" not in texts(tray.menu())


def test_error_shows_with_its_fix(tray: Tray, daemon: FakeDaemon) -> None:
    _failed(daemon)
    tray.controller.refresh()
    lines = texts(tray.menu())
    assert "Error: CUDA out of memory" in lines
    assert any(line.startswith("Fix: ") for line in lines)
    # The daemon's own fix wins over the tray's generic one.
    daemon.engine_fix = "free GPU memory"
    tray.controller.refresh()
    assert "Fix: free GPU memory" in texts(tray.menu())


def test_long_errors_are_wrapped(tray: Tray, daemon: FakeDaemon) -> None:
    _failed(daemon)
    daemon.engine_error = "word " * 100
    tray.controller.refresh()
    lines = [line for line in texts(tray.menu()) if line.startswith(("Error", "word"))]
    assert 1 < len(lines) <= 4 and all(len(line) <= 60 for line in lines)


def test_a_status_of_another_shape_is_an_error(tray: Tray, client: FakeClient) -> None:
    def other_version() -> dict[str, Any]:
        return {"state": "running", "swap": True, "engine": {"name": "wan", "state": "ready"}}

    client.status = other_version  # type: ignore[method-assign]
    assert tray.controller.refresh() == TrayState.ERROR
    lines = texts(tray.menu())
    assert any(line.startswith("Error: the daemon's status is not understood") for line in lines)
    assert any(line.startswith("Fix: ") for line in lines)
    assert "Start daemon" not in lines


def test_not_running_offers_to_start_the_daemon(client: FakeClient) -> None:
    factory = Factory(DaemonNotRunning("no control file"), client)
    tray = Tray(factory)
    assert tray.controller.refresh() == TrayState.NOT_RUNNING
    menu = tray.menu()
    assert texts(menu)[0] == "FaceSwap Cam: Not running"
    assert STOP_ITEM not in texts(menu)
    assert find(menu, "Swap faces").enabled is False
    assert find(menu, "Open preview").enabled is False
    assert find(faces(menu), "FaceSwap Cam is not running").enabled is False

    click(menu, "Start daemon")
    assert tray.starts == 1
    assert tray.controller.refresh() == TrayState.SWAPPING
    assert "Start daemon" not in texts(tray.menu())


def test_a_daemon_that_exits_at_start_is_reported() -> None:
    class Exited:
        def poll(self) -> int:
            return 2

    tray = Tray(Factory(DaemonNotRunning()))
    tray.process = Exited()
    tray.controller.refresh()
    click(tray.menu(), "Start daemon")
    assert tray.controller.detail == "starting"
    assert "Starting…" in texts(tray.menu())
    tray.controller.refresh()
    assert [title for title, _ in tray.notes] == ["FaceSwap Cam could not start"]
    assert "code 2" in tray.notes[0][1]
    assert "Start daemon" in texts(tray.menu())


def test_reconnects_after_the_daemon_restarts(daemon: FakeDaemon, client: FakeClient) -> None:
    restarted = FakeClient(FakeDaemon(reference="carol"))
    factory = Factory(client, DaemonNotRunning("no control file"), restarted)
    tray = Tray(factory)
    assert tray.controller.refresh() == TrayState.SWAPPING

    client.down = True  # the daemon stops; its control file is gone
    assert tray.controller.refresh() == TrayState.NOT_RUNNING
    assert "Start daemon" in texts(tray.menu())
    # It comes back with a new control file: a new client, read from it.
    assert tray.controller.refresh() == TrayState.SWAPPING
    assert tray.controller.status is not None
    assert tray.controller.status.reference == "carol"
    assert texts(faces(tray.menu()))[0] == "carol"
    assert factory.calls == 3


def test_restart_on_the_same_port_with_a_new_token(client: FakeClient) -> None:
    renewed = FakeClient(FakeDaemon(reference="dave"))
    factory = Factory(client, renewed)
    tray = Tray(factory)
    tray.controller.refresh()
    client.refuse_token = True
    # The stale client is replaced within the same poll.
    assert tray.controller.refresh() == TrayState.SWAPPING
    assert tray.controller.status is not None and tray.controller.status.reference == "dave"


def test_unanswered_requests_are_an_error(tray: Tray, client: FakeClient) -> None:
    def hang() -> dict[str, Any]:
        raise ControlError(None, "GET /status: no answer within 10 s")

    client.status = hang  # type: ignore[method-assign]
    assert tray.controller.refresh() == TrayState.ERROR
    assert any("no answer" in line for line in texts(tray.menu()))


def test_notifications_fire_on_the_transition_only(tray: Tray, daemon: FakeDaemon) -> None:
    _failed(daemon)
    for _ in range(3):
        tray.controller.refresh()
    assert [title for title, _ in tray.notes] == ["Face swap failed"]
    assert "CUDA out of memory" in tray.notes[0][1]

    _lost(daemon)
    tray.controller.refresh()
    tray.controller.refresh()
    assert [title for title, _ in tray.notes] == ["Face swap failed", "Camera lost"]
    assert "/dev/video0 disappeared" in tray.notes[1][1]

    # Recovered, then failing again: news again.
    daemon.state, daemon.engine_state, daemon.engine_error = "running", "running", ""
    daemon.capture_state, daemon.camera_error = "live", ""
    assert tray.controller.refresh() == TrayState.SWAPPING
    _failed(daemon)
    tray.controller.refresh()
    assert [title for title, _ in tray.notes].count("Face swap failed") == 2


# --- actions ----------------------------------------------------------------------------------


def test_stop_and_quit_asks_first(tray: Tray, client: FakeClient, daemon: FakeDaemon) -> None:
    icon = FakeIcon()
    tray.controller.attach(icon)
    tray.answer = False
    click(tray.menu(), STOP_ITEM)
    assert tray.confirms == ["Stop FaceSwap Cam?"]
    assert daemon.shutdowns == 0 and not icon.stopped

    tray.answer = True
    click(tray.menu(), STOP_ITEM)
    assert daemon.shutdowns == 1 and icon.stopped


def test_quit_tray_leaves_the_daemon_running(tray: Tray, daemon: FakeDaemon) -> None:
    icon = FakeIcon()
    tray.controller.attach(icon)
    click(tray.menu(), "Quit tray")
    assert icon.stopped and daemon.shutdowns == 0 and not tray.confirms


def test_add_reference(tray: Tray, client: FakeClient, daemon: FakeDaemon, png: Path) -> None:
    tray.chosen = png
    click(faces(tray.menu()), "Add reference face…")
    assert "bob" in daemon.library
    assert daemon.selected == "alice"  # one was selected already: it stays
    assert tray.notes == [("Reference face added", "bob")]
    assert "bob" in texts(faces(tray.menu()))


def test_first_reference_is_selected(client: FakeClient, daemon: FakeDaemon, png: Path) -> None:
    daemon.library.clear()
    daemon.selected = None
    tray = Tray(Factory(client))
    tray.controller.refresh()
    tray.chosen = png
    click(faces(tray.menu()), "Add reference face…")
    assert daemon.status().reference == "bob"
    assert find(faces(tray.menu()), "bob").checked is True


def test_rejected_reference_shows_the_reason(tray: Tray, daemon: FakeDaemon,
                                             tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"hello")
    tray.chosen = bad
    click(faces(tray.menu()), "Add reference face…")
    assert tray.notes == [("Reference face not added", "not a PNG or JPEG image")]
    assert list(daemon.library) == ["alice"]


def test_cancelled_file_dialog_does_nothing(tray: Tray, client: FakeClient) -> None:
    tray.chosen = None
    click(faces(tray.menu()), "Add reference face…")
    assert not tray.notes and not [c for c in client.calls if c[0] == "add_reference"]


def test_action_while_the_daemon_is_gone_notifies(tray: Tray, client: FakeClient) -> None:
    client.down = True
    click(tray.menu(), "Swap faces")
    assert [title for title, _ in tray.notes] == ["FaceSwap Cam is not running"]


def test_actions_run_through_dispatch(client: FakeClient) -> None:
    queued: list[Callable[[], None]] = []
    controller = TrayController(Factory(client), notify=lambda *_: None,
                                dispatch=queued.append)
    controller.refresh()
    find(controller.build_menu(), "Swap faces")(None)
    assert not client.calls  # nothing ran on the (GUI) thread that clicked
    queued.pop()()
    assert client.calls == [("set_swap", False)]


# --- the icon ---------------------------------------------------------------------------------


def test_icon_images() -> None:
    centres = {}
    for state in TrayState:
        image = icon_image(state)
        assert (image.size, image.mode) == ((64, 64), "RGBA")
        centres[state] = image.getpixel((20, 32))
    assert len(set(centres.values())) == len(TrayState)
    green = centres[TrayState.SWAPPING]
    assert isinstance(green, tuple) and green[1] > green[0] and green[1] > green[2]
    red = centres[TrayState.ERROR]
    assert isinstance(red, tuple) and red[0] > red[1]
    hollow = icon_image("not running").getpixel((32, 32))
    assert isinstance(hollow, tuple) and hollow[3] == 0  # an outline: the middle is empty


def test_attached_icon_follows_the_polls(tray: Tray, daemon: FakeDaemon) -> None:
    icon = FakeIcon()
    tray.controller.attach(icon)
    assert icon.title == "FaceSwap Cam: Swapping faces, alice, 30 fps"
    assert icon.menu_sets == 1 and icon.icon is not None
    swapping_image = icon.icon

    daemon.publish_fps = 30.2  # the same at the menu's precision: no rebuild
    tray.controller.refresh()
    assert icon.menu_sets == 1

    daemon.paused = True
    tray.controller.refresh()
    assert icon.menu_sets == 2 and icon.title.startswith("FaceSwap Cam: Camera paused")
    assert icon.icon.tobytes() != swapping_image.tobytes()


def test_notifications_go_to_the_icon_by_default(client: FakeClient,
                                                 daemon: FakeDaemon) -> None:
    controller = TrayController(Factory(client), dispatch=lambda action: action())
    icon = FakeIcon()
    controller.attach(icon)
    _lost(daemon)
    controller.refresh()
    assert [title for title, _ in icon.notes] == ["Camera lost"]


# --- the poller -------------------------------------------------------------------------------


def test_poller_thread_follows_the_daemon(client: FakeClient, daemon: FakeDaemon) -> None:
    states: list[TrayState] = []
    paused = threading.Event()
    controller: TrayController

    def changed() -> None:
        states.append(controller.state)
        if controller.state == TrayState.PAUSED:
            paused.set()

    # A long interval: the poke, not the timer, must bring the change in.
    controller = TrayController(Factory(client), notify=lambda *_: None, interval=60.0,
                                on_change=changed, dispatch=lambda action: action())
    controller.start()
    try:
        daemon.set_paused(True)
        controller.poke()
        assert paused.wait(5.0), states
    finally:
        controller.stop()
    assert controller._thread is None


# --- over real HTTP ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """conftest's check, less the control server's pooled worker threads."""
    yield from threads_stop_but_workers()


def test_against_a_real_control_server(tmp_path: Path, png: Path) -> None:
    control_file = tmp_path / "control.json"

    def factory() -> ControlClient:
        return ControlClient.from_token_file(control_file, timeout=5.0)

    first = FakeDaemon()
    tray = Tray(factory)
    assert tray.controller.refresh() == TrayState.NOT_RUNNING  # no control file yet
    with ControlServer(first, token_file=control_file):
        assert tray.controller.refresh() == TrayState.SWAPPING
        click(tray.menu(), "Swap faces")
        assert first.swap is False
        assert tray.controller.state == TrayState.PASSTHROUGH

        tray.chosen = png
        click(faces(tray.menu()), "Add reference face…")
        assert "bob" in first.library
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"GIF89a")
        tray.chosen = bad
        click(faces(tray.menu()), "Add reference face…")
        assert tray.notes[-1] == ("Reference face not added", "not a PNG or JPEG image")

    assert tray.controller.refresh() == TrayState.NOT_RUNNING
    second = FakeDaemon(reference="erin")
    with ControlServer(second, token_file=control_file):  # new port, new token
        assert tray.controller.refresh() == TrayState.SWAPPING
        assert texts(faces(tray.menu()))[0] == "erin"
        tray.answer = True
        click(tray.menu(), STOP_ITEM)
        assert second.shutdowns == 1


# --- main() -----------------------------------------------------------------------------------


class ScriptedIcon(BaseIcon):  # type: ignore[misc]
    """A backend without a GUI: its loop shows the icon, then plays ``script`` on it."""

    script: Callable[[ScriptedIcon], None] = staticmethod(lambda icon: None)
    fail: Exception | None = None
    instances: list[ScriptedIcon] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shown = threading.Event()
        self.stopped = threading.Event()
        self.menus = 0
        ScriptedIcon.instances.append(self)

    def _show(self) -> None:
        self.shown.set()

    def _hide(self) -> None:
        pass

    def _update_icon(self) -> None:
        self._icon_valid = True

    def _update_title(self) -> None:
        pass

    def _update_menu(self) -> None:
        self.menus += 1

    def _run(self) -> None:
        if self.fail is not None:
            raise self.fail
        self._mark_ready()
        assert self.shown.wait(5.0)
        self.script(self)
        assert self.stopped.wait(5.0)

    def _stop(self) -> None:
        self.stopped.set()

    def _notify(self, message: str, title: str | None = None) -> None:
        pass


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedIcon]:
    monkeypatch.setattr(pystray, "Icon", ScriptedIcon)
    monkeypatch.setattr(ScriptedIcon, "instances", [])
    return ScriptedIcon


def test_main_runs_the_icon_until_quit(scripted: type[ScriptedIcon],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from faceswap_cam.tray.app import main

    seen: list[str] = []

    def script(icon: ScriptedIcon) -> None:
        seen.append(icon.title)
        find(icon.menu, "Quit tray")(icon)

    monkeypatch.setattr(scripted, "script", staticmethod(script))
    assert main(["--interval", "0.2"]) == 0
    [icon] = scripted.instances
    assert seen == ["FaceSwap Cam: Not running"]  # conftest's control file does not exist
    assert "Start daemon" in texts(icon.menu)
    assert icon.stopped.is_set() and icon.menus >= 1


def test_main_when_the_loop_cannot_start(scripted: type[ScriptedIcon],
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from faceswap_cam.tray.app import main

    monkeypatch.setattr(scripted, "fail", RuntimeError("cannot open display"))
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "cannot open display" in err and "faceswap-cam status" in err
    # conftest's thread check: pystray's setup thread was let go, not left waiting.


def _tray_main(env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    code = "import sys; from faceswap_cam.tray.app import main; sys.exit(main([]))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, check=False)


def _gui_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "PYSTRAY_BACKEND")}
    env["FACESWAP_CAM_CONTROL_FILE"] = str(tmp_path / "control.json")
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 backends are Linux's")
def test_main_without_a_display_says_what_to_install(tmp_path: Path) -> None:
    pytest.importorskip("Xlib", reason="python-xlib (pystray's xorg backend) is not installed")
    env = _gui_env(tmp_path)
    # xorg: importing it fails without a display with Xlib's own error, not an ImportError.
    env["PYSTRAY_BACKEND"] = "xorg"
    result = _tray_main(env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for hint in ("no system tray", "xorg", "gir1.2-ayatanaappindicator3-0.1", "python3-gi",
                 "AppIndicator extension", "faceswap-cam status"):
        assert hint in result.stderr


def test_main_with_the_dummy_backend_fails_cleanly(tmp_path: Path) -> None:
    env = _gui_env(tmp_path)
    env["PYSTRAY_BACKEND"] = "dummy"
    result = _tray_main(env)
    assert result.returncode == 1, result.stderr
    assert "no system tray" in result.stderr and "faceswap-cam status" in result.stderr


@pytest.fixture
def xvfb_display() -> Iterator[str]:
    if not sys.platform.startswith("linux"):
        pytest.skip("Xvfb is a Linux test")
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display and writes its number when it accepts clients.
    process = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-nolisten", "tcp"],
                               pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as reader:
            number = reader.readline().strip()
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def test_main_under_xvfb_refuses_a_backend_without_menus(tmp_path: Path,
                                                          xvfb_display: str) -> None:
    pytest.importorskip("Xlib", reason="python-xlib (pystray's xorg backend) is not installed")
    env = _gui_env(tmp_path)
    env["DISPLAY"] = xvfb_display
    env["PYSTRAY_BACKEND"] = "xorg"
    result = _tray_main(env)
    assert result.returncode == 1, result.stderr
    assert "has no menus" in result.stderr and "appindicator" in result.stderr
    assert "There is no graphical session" not in result.stderr
