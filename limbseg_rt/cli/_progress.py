"""A tiny progress bar on stderr (the runtime carries no tqdm).

On a terminal the bar redraws in place; when stderr is a file or pipe (logs, tests) it writes one
line when the work finishes, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Call ``update(done, total)`` as work advances and ``close()`` at the end (or use ``with``)."""

    def __init__(self, label: str, unit: str = "slices", *, stream: TextIO | None = None, width: int = 30):
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.perf_counter()
        self._done = 0
        self._total = 0
        self._closed = False

    def update(self, done: int, total: int) -> None:
        self._done, self._total = int(done), int(total)
        if self.tty:
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def _line(self) -> str:
        frac = self._done / self._total if self._total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.perf_counter() - self._start
        return f"{self.label}: [{bar}] {self._done}/{self._total} {self.unit} {elapsed:.1f}s"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._total:
            self.stream.write(("\r" if self.tty else "") + self._line() + "\n")
            self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        elif self.tty and self._total:
            self.stream.write("\n")  # leave the error message on its own line
            self._closed = True
