"""diffusers' own warnings, silenced where we know them to be true and irrelevant."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Only errors from diffusers inside the block (nothing to quiet without diffusers)."""
    try:
        logs: Any = importlib.import_module("diffusers.utils.logging")
    except ImportError:
        yield
        return
    level = logs.get_verbosity()
    logs.set_verbosity_error()
    try:
        yield
    finally:
        logs.set_verbosity(level)
