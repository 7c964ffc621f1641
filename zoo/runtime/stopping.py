"""Graceful stop for long loops: Ctrl-C or SIGTERM asks training to stop at the next batch boundary.

A KeyboardInterrupt raised in the middle of ``optimizer.step()`` can leave the parameters half-updated, so a
checkpoint written from there would not resume the same run. Instead the first SIGINT/SIGTERM only sets a flag;
the loop finishes its batch, writes a consistent checkpoint and returns. A second Ctrl-C aborts at once
(the last checkpoint on disk is kept). SIGTERM is what schedulers and shutting-down machines send.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["StopRequest"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager; ``requested`` turns true on the first SIGINT or SIGTERM while it is active.

    Outside the main thread Python cannot install signal handlers; there Ctrl-C stays a KeyboardInterrupt.
    """

    def __init__(self, message: str = "Stopping after this batch and saving a checkpoint; Ctrl-C again to abort."):
        self.requested = False
        self._message = message
        self._previous: dict[int, Any] = {}

    def request(self) -> None:
        """Ask for a stop, as a signal would (for callbacks and tests)."""
        self.requested = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{self._message}", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
