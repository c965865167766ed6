"""diffusers' own warnings, silenced where we know them to be true and irrelevant."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from typing import Any

#: torchao (which diffusers imports when it is installed) registers its enums with torch's
#: pytree the way torch now deprecates, and torch says so on every import: nothing we can act on.
_PYTREE_LOGGER = "torch.utils._pytree"


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Only errors from diffusers, and from torch's pytree registry, inside the block (nothing
    to quiet without diffusers)."""
    try:
        logs: Any = importlib.import_module("diffusers.utils.logging")
    except ImportError:
        yield
        return
    level = logs.get_verbosity()
    logs.set_verbosity_error()
    pytree = logging.getLogger(_PYTREE_LOGGER)
    pytree_level = pytree.level
    pytree.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logs.set_verbosity(level)
        pytree.setLevel(pytree_level)
