"""The server's parts that need no HTTP: dynamic batching against a real bundle, and the metrics text."""
from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")

from bundle_factory import bundle_dir, model  # noqa: E402,F401  (fixtures)
from dagnn_runtime.server.batching import Batcher, BatcherClosed  # noqa: E402
from dagnn_runtime.server.metrics import Metrics  # noqa: E402


def _pixels(model, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, model.image_size, model.image_size, 3), dtype=np.uint8)


@pytest.mark.parametrize("workers", [1, 2])
def test_batched_embeddings_equal_one_by_one(model, workers):
    pixels = _pixels(model, 20)
    sizes = []

    async def go():
        batcher = Batcher(model.encode_pixels, max_batch=8, max_wait_ms=20, workers=workers,
                          observe=lambda n, s: sizes.append(n))
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(p) for p in pixels))
        finally:
            await batcher.close()

    rows = asyncio.run(go())
    alone = np.concatenate([model.encode_pixels(p[None]) for p in pixels])
    np.testing.assert_allclose(np.stack(rows), alone, atol=1e-5)
    assert sum(sizes) == 20 and max(sizes) <= 8
    assert len(sizes) <= 5, f"20 concurrent requests should share batches, got sizes {sizes}"


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on(model):
    def run(batch):
        if (batch == 7).all(axis=(1, 2, 3)).any():
            raise RuntimeError("boom")
        return model.encode_pixels(batch)

    good, bad = _pixels(model, 1)[0], np.full_like(_pixels(model, 1)[0], 7)

    async def go():
        batcher = Batcher(run, max_batch=4, max_wait_ms=5)
        batcher.start()
        try:
            failed = await asyncio.gather(batcher.submit(good), batcher.submit(bad), return_exceptions=True)
            after = await batcher.submit(good)
        finally:
            await batcher.close()
        return failed, after

    failed, after = asyncio.run(go())
    assert all(isinstance(x, RuntimeError) for x in failed)  # gathered into one batch: both fail
    np.testing.assert_allclose(after, model.encode_pixels(good[None])[0], atol=1e-5)


def test_closed_batcher_refuses_work(model):
    async def go():
        batcher = Batcher(model.encode_pixels)
        batcher.start()
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(_pixels(model, 1)[0])

    asyncio.run(go())


def test_batcher_rejects_bad_settings(model):
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(model.encode_pixels, max_batch=0)


def test_metrics_exposition():
    m = Metrics()
    m.requests.inc("/v1/search", "POST", "200")
    m.requests.inc("/v1/search", "POST", "200")
    m.requests.inc('/we"ird\\', "GET", "404")
    for v in (0.003, 0.02, 0.02, 7.0, 30.0):
        m.latency.observe(v, "/v1/search")
    m.gauge("dagnn_index_items", "Items.", lambda: {("image",): 5, ("text",): 3}, ("modality",))
    text = m.render()
    assert 'dagnn_http_requests_total{route="/v1/search",method="POST",status="200"} 2' in text
    assert r'route="/we\"ird\\"' in text
    buckets = [(le, int(n)) for le, n in re.findall(
        r'dagnn_http_request_duration_seconds_bucket\{route="/v1/search",le="([^"]+)"\} (\d+)', text)]
    counts = [n for _, n in buckets]
    assert counts == sorted(counts) and buckets[-1] == ("+Inf", 5)
    assert dict(buckets)["0.005"] == 1 and dict(buckets)["0.025"] == 3 and dict(buckets)["10"] == 4
    assert "dagnn_http_request_duration_seconds_count{route=\"/v1/search\"} 5" in text
    assert '# TYPE dagnn_index_items gauge' in text and 'dagnn_index_items{modality="text"} 3' in text
    for line in text.splitlines():  # every sample line: name{labels} value
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{.*\})? -?[0-9.e+-]+', line), line
