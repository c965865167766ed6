"""Timing helpers the benchmark scripts share: time a method's calls or a module's forwards
without changing the code under test, then undo it; quiet the model libraries' logging.

A script run as ``.venv/bin/python benchmarks/X.py`` puts the repository on ``sys.path`` first
(see each script's ``REPO``), then imports this as ``benchmarks._timing``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Timer(Protocol):
    """Where timed spans go: ``start`` returns a token, ``stop`` closes the span it opened."""

    def start(self) -> Any: ...

    def stop(self, label: str, token: Any) -> None: ...


def wrap_method(obj: Any, name: str, label: str, timer: Timer) -> Callable[[], None]:
    """Time every call of ``obj.name`` (an instance attribute shadows the class's method);
    returns the undo."""
    original = getattr(obj, name)
    had_own = name in vars(obj)

    def timed(*args: Any, **kwargs: Any) -> Any:
        token = timer.start()
        try:
            return original(*args, **kwargs)
        finally:
            timer.stop(label, token)

    setattr(obj, name, timed)

    def undo() -> None:
        if had_own:
            setattr(obj, name, original)
        else:
            delattr(obj, name)

    return undo


def hook_module(module: Any, label: str, timer: Timer) -> Callable[[], None]:
    """Time every forward of ``module`` with a pre- and a post-forward hook; returns the undo."""
    tokens: list[Any] = []

    def before(_module: Any, _args: Any) -> None:
        tokens.append(timer.start())

    def after(_module: Any, _args: Any, _output: Any) -> None:
        timer.stop(label, tokens.pop())

    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def undo() -> None:
        for handle in handles:
            handle.remove()

    return undo


@contextmanager
def undone_on_exit(undo: list[Callable[[], None]]) -> Iterator[None]:
    """Runs the undos of :func:`wrap_method` / :func:`hook_module`, last first, on exit."""
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def quiet(level: int | None = None) -> None:
    """No progress bars or per-call warnings from diffusers and transformers in the figures;
    with ``level``, the root logger is configured at that level too."""
    if level is not None:
        logging.basicConfig(level=level)
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        module: Any = importlib.import_module(name)
        module.set_verbosity_error()
        module.disable_progress_bar()
