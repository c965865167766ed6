"""The shared test data (real photographs) beside the checkout, and the mark for the tests
that need it."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason="shared test data not present (CI has it; a user's clone does not)")
