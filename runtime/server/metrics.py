"""Prometheus text exposition (format 0.0.4) written by hand: counters, histograms and gauges.

A service this small needs a handful of series, not a client library: request counts and latency per
route, the sizes of the batches the model ran, and the index sizes, read when scraped.
"""
from __future__ import annotations

import bisect
import threading
from typing import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
INF = 'le="+Inf"'


def _labels(names: tuple, values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _num(x: float) -> str:
    return repr(float(x)) if x != int(x) else str(int(x))


class Counter:
    def __init__(self, name: str, help: str, labels: tuple = ()):
        self.name, self.help, self.label_names = name, help, labels
        self._values: dict = {}
        self._lock = threading.Lock()

    def inc(self, *labels, by: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + by

    def render(self) -> list:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple, labels: tuple = ()):
        self.name, self.help, self.label_names, self.buckets = name, help, labels, tuple(buckets)
        self._series: dict = {}  # labels -> [bucket counts..., sum, count]
        self._lock = threading.Lock()

    def observe(self, value: float, *labels) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            s = self._series.setdefault(labels, [0] * len(self.buckets) + [0.0, 0])
            if i < len(self.buckets):
                s[i] += 1
            s[-2] += value
            s[-1] += 1

    def render(self) -> list:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        lines = []
        for key, s in items:
            running = 0
            for bound, n in zip(self.buckets, s):
                running += n
                le = 'le="%s"' % _num(bound)
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {running}")
            lines.append(f"{self.name}_bucket{_labels(self.label_names, key, INF)} {s[-1]}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_num(s[-2])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {s[-1]}")
        return lines


class Gauge:
    """Read when scraped: ``read()`` returns ``{label values tuple: value}``."""

    def __init__(self, name: str, help: str, read: Callable[[], dict], labels: tuple = ()):
        self.name, self.help, self.label_names, self._read = name, help, labels, read

    def render(self) -> list:
        return [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in sorted(self._read().items())]


class Metrics:
    """The service's series; ``render()`` is the body of ``GET /metrics``."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self):
        self.requests = Counter("dagnn_http_requests_total", "HTTP requests answered, by route, method and status.",
                                ("route", "method", "status"))
        self.latency = Histogram("dagnn_http_request_duration_seconds", "Time to answer a request, by route.",
                                 LATENCY_BUCKETS, ("route",))
        self.batch_size = Histogram("dagnn_batch_size", "Images per model call of the dynamic batcher.", BATCH_BUCKETS)
        self.batch_seconds = Histogram("dagnn_batch_duration_seconds", "Time of one batched model call.",
                                       LATENCY_BUCKETS)
        self.rejected = Counter("dagnn_http_rejected_total", "Requests refused before running, by reason.",
                                ("reason",))
        self._gauges: list = []

    def gauge(self, name: str, help: str, read: Callable[[], dict], labels: tuple = ()) -> None:
        self._gauges.append(Gauge(name, help, read, labels))

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> str:
        out = []
        for kind, metric in ([("counter", self.requests), ("counter", self.rejected), ("histogram", self.latency),
                              ("histogram", self.batch_size), ("histogram", self.batch_seconds)]
                             + [("gauge", g) for g in self._gauges]):
            out.append(f"# HELP {metric.name} {metric.help}")
            out.append(f"# TYPE {metric.name} {kind}")
            out.extend(metric.render())
        return "\n".join(out) + "\n"
