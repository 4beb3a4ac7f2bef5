"""Interruptions: SIGTERM/SIGHUP become an exception like Ctrl-C (SIGINT), so every `finally` that removes a temporary
output runs; `held()` defers a signal over the few lines that must not be cut (a rename swap, a cleanup).

`nadm.cli.main` calls `install()`; library users who never call it keep Python's own SIGINT behaviour and the
default (immediate) SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM/SIGHUP); a KeyboardInterrupt, so code that cleans up after Ctrl-C
    cleans up after this too."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


_depth = 0  # open held() sections (main thread only: Python runs signal handlers there)
_pending: int | None = None  # a signal that arrived inside a held() section


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _handler(signum: int, frame) -> None:
    """Raise KeyboardInterrupt/Terminated now, or after the current held() section."""
    global _pending
    if _depth:
        _pending = _pending or signum
        return
    _raise_for(signum)


def install() -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into exceptions in this (main) thread; a no-op elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        signal.signal(signum, _handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM/SIGHUP (when `install` is active) until the block ends, then raise for the first one."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            _raise_for(signum)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's code for a run stopped by a signal: 128 + the signal number (130 for Ctrl-C)."""
    return 128 + (interrupt.signum if isinstance(interrupt, Terminated) else signal.SIGINT)
