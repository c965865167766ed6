"""``run --engine-url``: a host the daemon did not start, and one that does not answer."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_cam.daemon.config import ConfigError, Settings, load_settings
from faceswap_cam.daemon.control.status import EngineHostState
from faceswap_cam.daemon.engine_host import host
from faceswap_cam.daemon.engine_host.address import (
    AddressError,
    parse_engine_url,
    parse_listen,
)
from faceswap_cam.daemon.engine_host.child import ChildEngineHost
from faceswap_cam.daemon.engine_host.launch import plan_engine
from faceswap_cam.daemon.engine_host.remote import RemoteEngineHost
from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp, StartError
from faceswap_cam.models.engine import REFERENCE_FROM_CLIENT, EngineError, resolve_engine_name
from tests.engine_host.helpers import daemon, serving, wait_for


def test_a_host_elsewhere_swaps_with_the_token_from_a_file(
        apps: list[RealtimeFaceSwapApp], tmp_path: Path) -> None:
    with serving("--engine", "debug") as (url, _):
        token_file = tmp_path / "token"
        token_file.write_text(f"{url.token}\n")
        token_file.chmod(0o600)
        app = daemon(apps, engine_url=str(url), engine_token_file=token_file)
        wait_for(lambda: app.processor.frames_swapped >= 10, 20, "swapped frames")
        status = app.status().engine_host
        assert status is not None and status.state is EngineHostState.CONNECTED
        assert status.url == str(url) and "token" not in status.url and status.pid is None
        app.close()


def test_a_url_that_does_not_answer_leaves_the_camera_running(
        apps: list[RealtimeFaceSwapApp]) -> None:
    with serving("--engine", "debug") as (url, process):
        pass  # a host that was there and is gone: its port answers no more
    assert process.poll() is not None
    app = daemon(apps, engine_url=f"{url}?token=whatever")
    wait_for(lambda: app.processor.engine_failures >= 2, 20, "two failed dials")
    before = app.ticks
    time.sleep(0.3)
    assert app.ticks - before >= 7
    status = app.status().engine_host
    assert status is not None and status.restarts >= 1
    assert "cannot reach the engine host" in status.error
    assert "engine serve" in status.fix


def test_a_listener_that_never_answers_is_given_up_on_saying_so() -> None:
    # Something took the connection and said nothing: status showed "starting" with no
    # word for 30 s a try.
    with socket.create_server(("127.0.0.1", 0)) as tarpit, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        url = parse_engine_url(f"fscam://127.0.0.1:{tarpit.getsockname()[1]}?token=t")
        remote = RemoteEngineHost(url, "t", frame_size=None, call_timeout_s=5,
                                  dial_timeout_s=1.0)
        dialling = pool.submit(remote.connect)
        accepted, _ = tarpit.accept()  # the dial is under way
        with accepted:
            meanwhile = remote.report()
            assert meanwhile.state is EngineHostState.STARTING
            assert "connecting to the engine host" in meanwhile.fix
            with pytest.raises(EngineError, match="no answer within 1 s"):
                dialling.result(timeout=10)
    after = remote.report()
    assert after.state is EngineHostState.FAILED and "no answer within 1 s" in after.error
    assert "nothing else listens on its port" in after.fix
    remote.close()


def test_a_url_without_a_token_is_refused_at_start() -> None:
    with pytest.raises(StartError, match="no token for the engine host"):
        RealtimeFaceSwapApp(Settings(source="demo", sinks=["null"], control_api=False,
                                     engine_url="fscam://127.0.0.1:7861"))


@pytest.mark.parametrize(("values", "words"), [
    ({"engine_url": "http://gpu-box:7861"}, "not an engine host URL"),
    ({"engine_url": "fscam://gpu-box:99999"}, "port"),
    ({"engine_url": "fscam://gpu-box:7861", "engine_host": "inline"}, "engine_host = inline"),
    ({"engine_token_file": "/tmp/token"}, "give engine_url too"),
    ({"engine_host": "elsewhere"}, "auto | child | inline"),
    ({"engine_gpus": "2", "engine_url": "fscam://127.0.0.1:7861"}, "engine serve --gpus N"),
    ({"engine_gpus": "2", "engine_host": "inline"}, "runs on one device"),
    ({"engine_gpus": "0"}, "engine_gpus"),
])
def test_engine_host_settings_are_checked(values: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as caught:
        load_settings(values, environ={})
    assert words in str(caught.value)


def test_listen_addresses_and_urls() -> None:
    assert parse_listen("127.0.0.1:0").is_loopback
    assert not parse_listen("0.0.0.0:7861").is_loopback
    assert parse_listen("unix:/run/x.sock").path == "/run/x.sock"
    with pytest.raises(AddressError):
        parse_listen("7861")
    fp = "sha256:" + "0f" * 32
    url = parse_engine_url(f"fscam://[::1]:7000?token=abc&fp={fp}")
    assert (url.address.host, url.address.port, url.token, url.fingerprint) == (
        "::1", 7000, "abc", fp)
    assert str(url) == "fscam://[::1]:7000"  # no secrets in logs and the status
    assert url.address.websocket_uri() == "ws://[::1]:7000/engine"


def test_a_host_starts_wan_animate_without_a_reference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon sends its reference over the wire: ``engine serve --engine wan-animate``
    on a GPU machine needs none at start, while the daemon's own check still asks for one."""
    options = {"wan_model": str(tmp_path), "preprocessor": "stand-in"}  # weights "present"
    with pytest.raises(EngineError, match="no reference face is set"):
        resolve_engine_name("wan-animate", options)
    assert resolve_engine_name("wan-animate", {**options, REFERENCE_FROM_CLIENT: True}) \
        == "wan-animate"

    built: list[dict[str, object]] = []

    def create_engine(name: str, **given: object) -> object:
        built.append({"name": name, **given})
        raise RuntimeError("stop here: the engine would load now")

    monkeypatch.setattr(host, "create_engine", create_engine)
    before = signal.getsignal(signal.SIGTERM)
    assert host.serve("wan-animate", options, parse_listen("127.0.0.1:0")) == 1
    assert built == [{"name": "wan-animate", **options}]  # the marker stays out of the engine
    # An in-process host leaves its caller's SIGTERM handler as it found it.
    assert signal.getsignal(signal.SIGTERM) is before
    assert "stop here" in capsys.readouterr().err


def test_engine_gpus_reach_the_local_child_host(tmp_path: Path) -> None:
    """``run --engine-gpus 2`` starts the child as ``engine serve --gpus 2`` (the group that
    command makes is tested in test_multi_gpu.py); one GPU adds no flag."""
    reference = tmp_path / "face.png"
    cv2.imwrite(str(reference), np.full((96, 80, 3), 128, np.uint8))
    options = {"wan_model": str(tmp_path), "preprocessor": "stand-in",
               "reference": str(reference)}  # weights "present"
    name, link = plan_engine(Settings(engine="wan-animate", engine_gpus=2), options)
    assert name == "wan-animate" and isinstance(link, ChildEngineHost)
    command = link.command(tmp_path / "host.sock")
    assert command[command.index("--gpus") + 1] == "2"
    _, single = plan_engine(Settings(engine="wan-animate"), options)
    assert isinstance(single, ChildEngineHost)
    assert "--gpus" not in single.command(tmp_path / "host.sock")


def test_engine_gpus_for_an_engine_that_cannot_split_stop_the_start() -> None:
    with pytest.raises(EngineError, match=r"engine debug runs on one device: --engine-gpus 2"):
        plan_engine(Settings(engine="debug", engine_host="child", engine_gpus=2), {})
