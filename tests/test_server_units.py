"""The server's parts that need no HTTP: the metrics text (batching: test_server_batching.py)."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")

from dagnn_runtime.server.metrics import Metrics  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


SERIES = {"dagnn_http_requests_total": "counter", "dagnn_http_rejected_total": "counter",
          "dagnn_http_request_duration_seconds": "histogram", "dagnn_batch_size": "histogram",
          "dagnn_batch_duration_seconds": "histogram", "dagnn_index_items": "gauge"}


def _samples(text: str) -> dict:
    """``{(sample name, {label: value} as a frozenset): value}``, whatever order the labels come in."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_exposition():
    m = Metrics()
    m.requests.inc("/v1/search", "POST", "200")
    m.requests.inc('/we"ird\\', "GET", "404")
    m.gauge("dagnn_index_items", "Items.", lambda: {("image",): 5, ("text",): 3}, ("modality",))
    text = m.render()
    assert m.CONTENT_TYPE.startswith("text/plain; version=")
    assert r'route="/we\"ird\\"' in text  # label values escaped
    assert dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)) == SERIES  # no more, no fewer (no *_created)
    for line in text.splitlines():  # every sample line: name{labels} value
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{.*\})? -?[0-9.e+-]+', line), line


def test_metrics_parse_back_with_their_values():
    m = Metrics()
    for _ in range(2):
        m.requests.inc("/v1/search", "POST", "200")
    m.requests.inc("/v1/items", "POST", "413")
    m.rejected.inc("overloaded")
    for v in (0.003, 0.02, 0.02, 7.0, 30.0):
        m.latency.observe(v, "/v1/search")
    m.observe_batch(3, 0.04)
    m.observe_batch(8, 0.2)
    items = {("image",): 5, ("text",): 3}
    m.gauge("dagnn_index_items", "Items in each index.", lambda: dict(items), ("modality",))
    m.gauge("dagnn_ready", "1 once the bundle and index are loaded.", lambda: {(): 1})

    got = _samples(m.render())

    def at(name, **labels):
        return got[(name, frozenset(labels.items()))]

    assert at("dagnn_http_requests_total", route="/v1/search", method="POST", status="200") == 2
    assert at("dagnn_http_requests_total", route="/v1/items", method="POST", status="413") == 1
    assert at("dagnn_http_rejected_total", reason="overloaded") == 1
    buckets = {float(dict(key)["le"]): v for (name, key), v in got.items()
               if name == "dagnn_http_request_duration_seconds_bucket" and ("route", "/v1/search") in key}
    assert sorted(buckets) == [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")]
    assert buckets[0.005] == 1 and buckets[0.025] == 3 and buckets[10] == 4 and buckets[float("inf")] == 5
    assert at("dagnn_http_request_duration_seconds_count", route="/v1/search") == 5
    assert at("dagnn_http_request_duration_seconds_sum", route="/v1/search") == pytest.approx(37.043)
    assert at("dagnn_batch_size_bucket", le="4.0") == 1 and at("dagnn_batch_size_bucket", le="8.0") == 2
    assert at("dagnn_batch_size_sum") == 11 and at("dagnn_batch_duration_seconds_count") == 2
    assert at("dagnn_index_items", modality="image") == 5 and at("dagnn_ready") == 1

    items[("image",)] = 6  # gauges are read when scraped
    assert _samples(m.render())[("dagnn_index_items", frozenset({("modality", "image")}))] == 6


def test_each_metrics_has_its_own_registry():
    a, b = Metrics(), Metrics()  # a second app in the same process must not clash on names
    a.requests.inc("/v1/search", "POST", "200")
    assert ("dagnn_http_requests_total", frozenset({("route", "/v1/search"), ("method", "POST"), ("status", "200")})) \
        not in _samples(b.render())
