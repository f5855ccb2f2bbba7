"""The training side's one progress display: a rich bar on a terminal, otherwise a plain line at most every
``every`` seconds through ``log`` (the logs of background runs stay readable and small)."""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

logger = logging.getLogger(__name__)


class Progress:
    """``with Progress(total, "label") as bar: bar.advance(n, info="...")``; disabled, it shows nothing."""

    def __init__(self, total: int, label: str, enabled: bool = True, *, transient: bool = True,
                 every: float = 30.0, log: Callable[[str], None] | None = None):
        self.total, self.label, self.enabled, self.every = total, label, enabled, every
        self.log = log or logger.info
        self.done, self.info, self.start = 0, "", time.monotonic()
        self.last, self.bar = self.start, None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(bar_width=10), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=transient)
            self.task = self.bar.add_task(label, total=total, info="")
            self.bar.start()
        elif enabled:
            self.log(f"{label}: {total} to do")

    def advance(self, n: int = 1, info: str = "") -> None:
        self.done += n
        self.info = info or self.info
        if self.bar is not None:
            self.bar.update(self.task, advance=n, info=self.info)
        elif self.enabled and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.log(f"  {self.label}: {self.done}/{self.total} ({self.rate():.1f}/s) {self.info}".rstrip())

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
