"""Dynamic batching against a real bundle: concurrent requests share model calls and get their own rows."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")

from bundle_factory import bundle_dir, model  # noqa: F401  (fixtures)
from dagnn_runtime.errors import ImageInputError
from dagnn_runtime.server.batching import Batcher, BatcherClosed, BatchingEncoder


def _pixels(model, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, model.image_size, model.image_size, 3), dtype=np.uint8)


@pytest.mark.parametrize("workers", [1, 2])
def test_batched_embeddings_equal_one_by_one(model, workers):
    pixels = _pixels(model, 20)
    sizes = []
    batcher = Batcher(model.encode_pixels, max_batch=8, max_wait_ms=20, workers=workers,
                      observe=lambda n, s: sizes.append(n))
    batcher.start()
    try:
        rows = [f.result(10) for f in [batcher.submit(p) for p in pixels]]
    finally:
        batcher.close()
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
    batcher = Batcher(run, max_batch=4, max_wait_ms=50)
    batcher.start()
    try:
        batcher.announce(2)  # both on their way: the worker waits for the second
        failed = [batcher.submit(good, announced=True), batcher.submit(bad, announced=True)]
        for future in failed:  # gathered into one batch: both fail
            with pytest.raises(RuntimeError, match="boom"):
                future.result(10)
        after = batcher.submit(good).result(10)
    finally:
        batcher.close()
    np.testing.assert_allclose(after, model.encode_pixels(good[None])[0], atol=1e-5)


def test_a_lone_image_runs_at_once_and_announced_ones_are_waited_for(model):
    import threading
    import time

    sizes = []
    batcher = Batcher(model.encode_pixels, max_batch=8, max_wait_ms=3000, observe=lambda n, s: sizes.append(n))
    batcher.start()
    try:
        batcher.submit(_pixels(model, 1)[0]).result(10)  # warm-up
        start = time.perf_counter()
        batcher.submit(_pixels(model, 1)[0]).result(10)
        alone = time.perf_counter() - start
        assert alone < 1.0, f"a lone image waited {alone:.2f} s for company that was not coming"

        batcher.announce(2)  # two requests decoding; the first arrives, the second 0.2 s later
        first = batcher.submit(_pixels(model, 1, seed=1)[0], announced=True)
        later = threading.Timer(0.2, lambda: batcher.submit(_pixels(model, 1, seed=2)[0], announced=True))
        later.start()
        first.result(10)
        later.join()
    finally:
        batcher.close()
    assert sizes[-1] == 2, f"the announced image should have joined the batch: batch sizes {sizes}"


def test_an_image_that_fails_to_decode_is_no_longer_waited_for(model, tmp_path):
    import time

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    batcher = Batcher(model.encode_pixels, max_batch=8, max_wait_ms=3000)
    batcher.start()
    encoder = BatchingEncoder(model, batcher)
    try:
        with pytest.raises(ImageInputError):
            encoder.images([bad])
        start = time.perf_counter()
        batcher.submit(_pixels(model, 1)[0]).result(10)
        assert time.perf_counter() - start < 1.0, "the failed image was still counted as on its way"
    finally:
        batcher.close()


def test_closed_batcher_refuses_work_and_fails_what_was_queued(model):
    batcher = Batcher(model.encode_pixels)
    batcher.start()
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit(_pixels(model, 1)[0])


def test_batcher_rejects_bad_settings(model):
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(model.encode_pixels, max_batch=0)


def test_the_batching_encoder_gives_the_models_own_embeddings_from_many_threads(model, tmp_path):
    from PIL import Image

    paths = []
    for i, p in enumerate(_pixels(model, 6, seed=3)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(p).save(paths[-1])
    batcher = Batcher(model.encode_pixels, max_batch=4, max_wait_ms=20)
    batcher.start()
    encoder = BatchingEncoder(model, batcher)
    try:
        with ThreadPoolExecutor(6) as pool:
            rows = list(pool.map(lambda p: encoder.images([p])[0], paths))
        both = encoder.images(paths[:2])
        with pytest.raises(ImageInputError, match="^item 1: "):
            encoder.images([paths[0], b"not an image"])
    finally:
        batcher.close()
    np.testing.assert_allclose(np.stack(rows), model.encode_images(paths), atol=1e-5)
    np.testing.assert_allclose(both, model.encode_images(paths[:2]), atol=1e-5)
