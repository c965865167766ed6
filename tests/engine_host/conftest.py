from __future__ import annotations

from collections.abc import Iterator

import pytest

from faceswap_cam.daemon.pipeline.app import RealtimeFaceSwapApp


@pytest.fixture
def apps() -> Iterator[list[RealtimeFaceSwapApp]]:
    """Daemons a test started (``helpers.daemon``), closed at its end."""
    started: list[RealtimeFaceSwapApp] = []
    yield started
    for app in started:
        app.close()
