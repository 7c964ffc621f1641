"""Progress for long loops: a tqdm bar on a terminal, a plain line a minute in a log.

Training runs for hours under ``nohup``, a batch scheduler or CI, where stderr is a file: tqdm's
carriage-return redraws are unreadable there, and no output at all leaves a user guessing whether the run
is alive. Off a terminal, one self-contained line per interval says where the loop is and when it ends.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .. import _config

__all__ = ["LineProgress", "progress"]


class LineProgress:
    """tqdm's ``update``/``set_postfix``/``close`` interface, printing one line every `interval` seconds."""

    def __init__(
        self,
        total: int,
        desc: str,
        initial: int = 0,
        interval: float = 60.0,
        file: IO[str] | None = None,
        unit: str = "img",
    ) -> None:
        self.total, self.desc, self.n, self.interval, self.unit = total, desc, initial, interval, unit
        self.file = file or sys.stderr
        self.postfix: dict[str, Any] = {}
        self._initial = initial  # a resumed loop's earlier images do not count towards the rate
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        """Nothing to clear: every line is already complete."""

    def _emit(self, now: float) -> None:
        rate = (self.n - self._initial) / max(now - self._start, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        parts = [
            f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n / max(self.total, 1):.0f}%)",
            f"{rate:.1f} {self.unit}/s",
            f"eta {_duration(eta)}",
        ]
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        print("  ".join(parts), file=self.file, flush=True)


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress(
    total: int,
    desc: str,
    enabled: bool = True,
    initial: int = 0,  # noqa: ANN201 - tqdm-like or None
    unit: str = "img",
):
    """A tqdm bar on a terminal, a line a minute elsewhere; None when disabled or `ZOO_NO_PROGRESS=1`."""
    if not enabled or not _config.show_progress():
        return None
    if not sys.stderr.isatty():
        return LineProgress(total, desc, initial=initial, unit=unit)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, initial=initial)
