"""The control API's clients stay light: the tray, the client and the CLI import none of the
server's web stack (each checked in a fresh interpreter, where nothing was imported before)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_STACK = ("fastapi", "uvicorn", "starlette")


def modules_after_import(module: str) -> set[str]:
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    return set(json.loads(result.stdout))


def server_stack(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.partition(".")[0] in SERVER_STACK)


@pytest.mark.parametrize("module", [
    "faceswap_cam.tray.app",
    "faceswap_cam.daemon.control.client",
    "faceswap_cam.daemon.cli",
])
def test_clients_do_not_import_the_server_stack(module: str) -> None:
    assert server_stack(modules_after_import(module)) == []


def test_the_client_needs_only_the_standard_library_and_the_control_file() -> None:
    modules = modules_after_import("faceswap_cam.daemon.control.client")
    ours = {m for m in modules if m.startswith("faceswap_cam")}
    assert ours <= {"faceswap_cam", "faceswap_cam.daemon", "faceswap_cam.daemon.paths",
                    "faceswap_cam.daemon.control", "faceswap_cam.daemon.control.control_file",
                    "faceswap_cam.daemon.control.client"}
    assert "pydantic" not in modules and "numpy" not in modules


def test_the_check_sees_the_server_stack() -> None:
    assert {"fastapi", "uvicorn", "starlette"} <= {
        m.partition(".")[0] for m in modules_after_import("faceswap_cam.daemon.control.server")}
