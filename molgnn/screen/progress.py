"""Progress of long screening work on stderr: a tqdm bar on a terminal, else a line every ``every_s``
seconds (and one at the end), so that a log file also shows a screen moving.

>>> p = Progress("demo", total=3, enabled=False)
>>> p.update(3); p.close(); p.done
3
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, desc: str, total: int | None, *, enabled: bool = True, every_s: float = 10.0,
                 stream: TextIO | None = None, unit: str = "mol"):
        self.desc, self.unit, self.every_s = desc, unit, every_s
        self.total = None if total is None else int(total)   # None: unknown
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.bar = None
        self.lines = False
        if enabled:
            tty = getattr(self.stream, "isatty", lambda: False)()
            if tty:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                                mininterval=0.25, leave=True)
            else:
                self.lines = True

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and time.perf_counter() - self.last >= self.every_s:
            self._line()

    def _line(self, end: bool = False) -> None:
        now = time.perf_counter()
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        word = "done in" if end else "after"
        of = f"/{self.total:,}" if self.total is not None else ""
        print(f"{self.desc}: {self.done:,}{of} {self.unit}{pct} {word} {now - self.start:.1f} s, "
              f"{rate:,.0f} {self.unit}/s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.lines:
            self._line(end=True)
            self.lines = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
