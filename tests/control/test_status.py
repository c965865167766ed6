"""The status model: its committed schema, its states against the daemon's own, the fields its
clients read, and how a document that is not one is refused."""

from __future__ import annotations

import ast
import importlib.resources
import math
from pathlib import Path
from typing import Any

import pytest

from faceswap_cam.daemon.control import status
from faceswap_cam.daemon.control.status import DaemonStatus, StatusError, parse_status
from tests.fake_daemon import InMemoryDaemon

REPO = Path(__file__).resolve().parents[2]
#: The status's clients: each must read only fields the model has.
CLIENTS = {"tray": REPO / "tray" / "app.py", "cli": REPO / "daemon" / "cli.py"}
REGENERATE = ("python -m faceswap_cam.daemon.control.status > "
              "daemon/control/status.schema.json")


def test_committed_schema_is_the_models() -> None:
    package = importlib.resources.files("faceswap_cam.daemon.control")
    committed = package.joinpath("status.schema.json").read_text(encoding="utf-8")
    assert committed == status.schema_text(), f"the schema is stale: run `{REGENERATE}`"


def status_fields_read(source: str) -> set[str]:
    """The attributes read on anything called ``status`` (``status.swap``,
    ``view.status.camera_error``): in the tray and the CLI, always a DaemonStatus."""

    def is_status(node: ast.expr) -> bool:
        return ((isinstance(node, ast.Name) and node.id == "status")
                or (isinstance(node, ast.Attribute) and node.attr == "status"))

    return {node.attr for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and is_status(node.value)}


def test_the_field_collector_sees_through_both_spellings() -> None:
    source = "status.swap\nview.status.no_such_field\nclient.status()\nexc.status == 401\n"
    assert status_fields_read(source) == {"swap", "no_such_field"}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_clients_read_only_fields_of_the_model(client: str) -> None:
    read = status_fields_read(CLIENTS[client].read_text(encoding="utf-8"))
    # Not vacuous: each client reads the state and the figures it shows.
    assert {"state", "engine_state", "publish_fps", "reference"} <= read
    methods = {name for name in dir(DaemonStatus) if name.startswith("model_")}
    known = set(DaemonStatus.model_fields) | methods
    assert read <= known, f"{client} reads fields the status does not have: {read - known}"


def document() -> dict[str, Any]:
    return InMemoryDaemon().status().model_dump(mode="json")


def test_round_trip_and_figures_that_are_not_numbers() -> None:
    daemon = InMemoryDaemon()
    daemon.publish_fps, daemon.latency_ms = math.nan, math.inf
    report = daemon.status()
    assert report.publish_fps is None and report.latency_ms is None
    assert parse_status(report.model_dump(mode="json")) == report


def test_unknown_fields_are_ignored() -> None:
    # A newer daemon may report more: an older tray keeps working.
    assert parse_status({**document(), "gpu_memory_mb": 512}) == parse_status(document())


@pytest.mark.parametrize(("change", "words"), [
    ({"engine_state": "ready"}, "engine_state"),
    ({"state": None}, "state"),
    ({"devices": {"source": "demo"}}, "devices.outputs"),
])
def test_a_document_of_another_shape_is_refused(change: dict[str, Any], words: str) -> None:
    with pytest.raises(StatusError, match="not understood") as caught:
        parse_status({**document(), **change})
    assert words in str(caught.value)


def test_missing_fields_are_counted() -> None:
    with pytest.raises(StatusError, match=r"and \d+ more"):
        parse_status({"state": "running"})
    with pytest.raises(StatusError):
        parse_status(["not", "a", "status"])
