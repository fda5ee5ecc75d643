"""Progress lines for long work (bag conversion and processing) on stderr, at most one every few seconds."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``label: done/total (rate/s, ETA)`` lines: the first, then at most one per ``interval`` seconds, then the last.

    Plain lines rather than a redrawn one, so logs and CI output stay readable.
    """

    def __init__(self, label: str, total: int | None, unit: str = "frames", interval: float = 2.0,
                 stream: TextIO | None = None, clock=time.monotonic):
        self.label = label
        self.total = total
        self.unit = unit
        self.interval = interval
        self.stream = stream or sys.stderr
        self._clock = clock
        self._start = clock()
        self._last_print: float | None = None
        self.done = 0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self._clock()
        if self._last_print is None or now - self._last_print >= self.interval or self.done == self.total:
            self._print(now)

    def finish(self) -> None:
        """The last line, where :meth:`advance` did not print it already."""
        if self._last_print is None or self.done != self.total:
            self._print(self._clock())

    def _print(self, now: float) -> None:
        self._last_print = now
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of_total = f"/{self.total}" if self.total is not None else ""
        text = f"{self.label}: {self.done}{of_total} {self.unit}, {rate:.1f}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", about {(self.total - self.done) / rate:.0f} s left"
        print(text, file=self.stream, flush=True)
