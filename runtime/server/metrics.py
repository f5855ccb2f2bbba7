"""The service's Prometheus series: request counts and latency per route, the sizes and times of the model's
batches, requests refused, and gauges (index sizes, readiness) read when scraped.

prometheus_client writes the exposition, so the format, escaping and thread safety are a maintained library's.
Each ``Metrics`` has its own registry (tests build several apps in one process); names, help texts, labels and
buckets are those of the hand-written exposition this replaced, so dashboards keep working.
"""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as _Counter
from prometheus_client import Histogram as _Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Counter:
    """A counter whose label values are positional: ``inc(route, method, status)``."""

    def __init__(self, name: str, help: str, labels: tuple, registry: CollectorRegistry):
        # prometheus_client exposes a counter as ``<name>_total``: give it the name without the suffix
        self._metric = _Counter(name.removesuffix("_total"), help, labels, registry=registry)
        self._labelled = bool(labels)

    def inc(self, *labels, by: float = 1.0) -> None:
        (self._metric.labels(*labels) if self._labelled else self._metric).inc(by)


class Histogram:
    """A histogram whose label values follow the observed value: ``observe(seconds, route)``."""

    def __init__(self, name: str, help: str, buckets: tuple, labels: tuple, registry: CollectorRegistry):
        self._metric = _Histogram(name, help, labels, buckets=buckets, registry=registry)
        self._labelled = bool(labels)

    def observe(self, value: float, *labels) -> None:
        (self._metric.labels(*labels) if self._labelled else self._metric).observe(value)


class Gauge(Collector):
    """Read when scraped: ``read()`` returns ``{label values tuple: value}``."""

    def __init__(self, name: str, help: str, read: Callable[[], dict], labels: tuple = ()):
        self.name, self.help, self.label_names, self._read = name, help, tuple(labels), read

    def describe(self) -> Iterable[GaugeMetricFamily]:  # the name, for the registry's duplicate check
        return [GaugeMetricFamily(self.name, self.help, labels=self.label_names)]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.help, labels=self.label_names)
        for key, value in sorted(self._read().items()):
            family.add_metric([str(v) for v in key], value)
        yield family


class _WithoutCreated:
    """The registry less the ``*_created`` series prometheus_client adds to counters and histograms: the
    hand-written exposition had none, and ``disable_created_metrics()`` would change every registry in the
    process, not just this one."""

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self):
        for family in self._registry.collect():
            if family.type in ("counter", "histogram"):
                family.samples = [s for s in family.samples if s.name != family.name + "_created"]
            yield family


class Metrics:
    """The service's series; ``render()`` is the body of ``GET /metrics``."""

    CONTENT_TYPE = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("dagnn_http_requests_total", "HTTP requests answered, by route, method and status.",
                                ("route", "method", "status"), self.registry)
        self.rejected = Counter("dagnn_http_rejected_total", "Requests refused before running, by reason.",
                                ("reason",), self.registry)
        self.latency = Histogram("dagnn_http_request_duration_seconds", "Time to answer a request, by route.",
                                 LATENCY_BUCKETS, ("route",), self.registry)
        self.batch_size = Histogram("dagnn_batch_size", "Images per model call of the dynamic batcher.",
                                    BATCH_BUCKETS, (), self.registry)
        self.batch_seconds = Histogram("dagnn_batch_duration_seconds", "Time of one batched model call.",
                                       LATENCY_BUCKETS, (), self.registry)
        self._exposed = _WithoutCreated(self.registry)

    def gauge(self, name: str, help: str, read: Callable[[], dict], labels: tuple = ()) -> None:
        self.registry.register(Gauge(name, help, read, labels))

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> str:
        return generate_latest(self._exposed).decode("utf-8")
