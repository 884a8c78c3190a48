"""SIGINT/SIGTERM handlers for the duration of a `with` block (lpgb-run's one stream and several streams).

`SignalGuard` installs its `_handle` for SIGINT and SIGTERM from the main thread only (elsewhere the
handlers stay as they are), never over an ignored signal (a shell's background job keeps ignoring
SIGINT), and restores the previous handlers at exit. Subclasses say what a signal does.
"""

from __future__ import annotations

import signal
import threading
from typing import TypeVar

__all__ = ["SignalGuard"]

G = TypeVar("G", bound="SignalGuard")


class SignalGuard:
    """Base of the stop-signal guards: installs `self._handle` for SIGINT/SIGTERM while entered."""

    def __init__(self) -> None:
        self._old: dict[int, object] = {}

    def __enter__(self: G) -> G:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            if old is not None and old != signal.SIG_IGN:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, _frame: object) -> None:
        raise NotImplementedError
