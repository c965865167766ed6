"""The tray's FaceSwap Mic item, and what it says when the voice cannot be carried."""

from __future__ import annotations

from faceswap_cam.daemon.control.status import MicStatus
from tests.control.test_tray import Factory, FakeClient, Tray, click, find
from tests.fake_daemon import InMemoryDaemon

MIC_ITEM = "FaceSwap Mic (voice in sync)"


def started_tray(daemon: InMemoryDaemon) -> tuple[Tray, FakeClient]:
    client = FakeClient(daemon)
    tray = Tray(Factory(client))
    tray.controller.refresh()
    return tray, client


def test_the_mic_item_switches_the_mic_through_the_api() -> None:
    daemon = InMemoryDaemon()
    tray, client = started_tray(daemon)
    item = find(tray.menu(), MIC_ITEM)
    assert (item.checked, item.enabled) == (False, True)
    click(tray.menu(), MIC_ITEM)
    assert client.calls[-1] == ("set_mic", True)
    assert daemon.status().mic is not None and find(tray.menu(), MIC_ITEM).checked is True
    click(tray.menu(), MIC_ITEM)
    assert client.calls[-1] == ("set_mic", False)
    assert daemon.status().mic is None and find(tray.menu(), MIC_ITEM).checked is False


def test_a_mic_without_a_microphone_says_so_and_how_to_fix_it_while_the_camera_goes_on() -> None:
    daemon = InMemoryDaemon()
    daemon.mic = MicStatus(state="no_input", device="FaceSwap Mic", input="headset",
                           delay_ms=0.0, target_ms=420.0, av_offset_ms=None,
                           detail="the microphone headset went away",
                           fix="plug it back in, or pick another: faceswap-cam run --mic NAME")
    tray, _ = started_tray(daemon)
    lines = tray.controller.status_lines()
    assert any("Mic: the microphone headset went away" in line for line in lines)
    assert any(line.startswith("Mic fix: plug it back in") for line in lines)
    assert tray.controller.state.value == "swapping"  # the camera is fine
