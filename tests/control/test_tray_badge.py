"""The tray's "AI altered" check item, and what it says about a reference it could not check."""

from __future__ import annotations

from pathlib import Path

from tests.control.test_tray import Factory, FakeClient, Tray, click, faces, find
from tests.fake_daemon import InMemoryDaemon, write_png

BADGE_ITEM = 'Mark camera "AI altered"'


def started_tray(daemon: InMemoryDaemon) -> tuple[Tray, FakeClient]:
    client = FakeClient(daemon)
    tray = Tray(Factory(client))
    tray.controller.refresh()
    return tray, client


def test_the_badge_item_switches_the_badge_through_the_api() -> None:
    daemon = InMemoryDaemon()
    tray, client = started_tray(daemon)
    item = find(tray.menu(), BADGE_ITEM)
    assert (item.checked, item.enabled) == (False, True)

    click(tray.menu(), BADGE_ITEM)
    assert client.calls[-1] == ("set_ai_badge", True)
    assert daemon.status().ai_badge is True
    assert find(tray.menu(), BADGE_ITEM).checked is True

    click(tray.menu(), BADGE_ITEM)
    assert client.calls[-1] == ("set_ai_badge", False)
    assert find(tray.menu(), BADGE_ITEM).checked is False


def test_an_unchecked_reference_is_said_to_be_unchecked(tmp_path: Path) -> None:
    daemon = InMemoryDaemon()
    daemon.person_check_skipped = "the person detector's weights are not downloaded"
    tray, _ = started_tray(daemon)
    tray.chosen = write_png(tmp_path / "bob.png", 64)
    click(faces(tray.menu()), "Add reference face…")
    assert tray.notes == [("Reference face added",
                           "bob (not checked for exactly one person: the person detector's "
                           "weights are not downloaded)")]
