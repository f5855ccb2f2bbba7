"""A log that a flood of failing requests or connections cannot fill: ``RateLimit``, a ``logging.Filter`` put on
the handlers of ``dagnn serve`` (root's, uvicorn's), so it sees uvicorn's, asyncio's and our records alike.

Records of one kind (same logger, level, message template and exception type) pass ``burst`` at a time per
``interval_s``; past that they are counted, not written, and once the interval is over one line says how
many were suppressed ("suppressed 4211 similar messages in the last 60 s: ..."). The access log is not
limited (it is one line per request by choice, ``--no-access-log`` turns it off).
"""
from __future__ import annotations

import logging
import threading
import time

EXEMPT = ("uvicorn.access",)


class RateLimit(logging.Filter):
    def __init__(self, burst: int = 5, interval_s: float = 60.0, max_kinds: int = 1000, exempt=EXEMPT):
        super().__init__()
        self.burst, self.interval_s, self.max_kinds, self.exempt = burst, interval_s, max_kinds, set(exempt)
        self._windows: dict = {}   # kind -> [window start, records in it, suppressed, logger, level, template]
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in self.exempt or getattr(record, "dagnn_summary", False):
            return True
        decided = getattr(record, "dagnn_rate_limited", None)  # one record, several handlers: one decision
        if decided is not None:
            return decided
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        kind = (record.name, record.levelno, str(record.msg)[:300], exc)
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(kind)
            if window is None or now - window[0] >= self.interval_s:
                due = [window] if window is not None and window[2] else []
                if window is None and len(self._windows) >= self.max_kinds:
                    due += self._forget_oldest()
                window = self._windows[kind] = [now, 0, 0, record.name, record.levelno, str(record.msg)]
            else:
                due = []
            window[1] += 1
            passes = window[1] <= self.burst
            if not passes:
                window[2] += 1
            if now - self._swept >= 1.0:
                self._swept = now
                due += self._closed(now)
        record.dagnn_rate_limited = passes
        self._report(due)
        return passes

    def flush(self) -> None:
        """Report every count still pending (at shutdown)."""
        with self._lock:
            due = [w for w in self._windows.values() if w[2]]
            self._windows.clear()
        self._report(due)

    def _closed(self, now: float) -> list:
        """Windows that are over and suppressed something (their count is reported once, then dropped)."""
        over = [k for k, w in self._windows.items() if now - w[0] >= self.interval_s]
        return [w for w in (self._windows.pop(k) for k in over) if w[2]]

    def _forget_oldest(self) -> list:
        oldest = sorted(self._windows, key=lambda k: self._windows[k][0])[: max(1, self.max_kinds // 10)]
        return [w for w in (self._windows.pop(k) for k in oldest) if w[2]]

    def _report(self, windows) -> None:
        for _, _, suppressed, name, level, template in windows:
            logging.getLogger(name).log(level, "suppressed %d similar messages in the last %g s: %s", suppressed,
                                        self.interval_s, template[:200], extra={"dagnn_summary": True})


def limit_logging(loggers=("", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"), **options) -> RateLimit:
    """One ``RateLimit`` on every handler of ``loggers`` (call it once logging is configured)."""
    rate = RateLimit(**options)
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if rate not in handler.filters:
                handler.addFilter(rate)
    return rate
