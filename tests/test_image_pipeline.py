"""Batch image decoding in a thread pool, one batch ahead of the encoder: same answers, per-item failures
reported at their positions, threads sized by the usable cores."""
import numpy as np

from dagnn_runtime import execution
from dagnn_runtime.preprocess import iter_pixels, load_image
from bundle_factory import bundle_dir, data_dir, model  # noqa: F401


def test_iter_pixels_keeps_order_and_reports_bad_items_at_their_position(model, data_dir, tmp_path):
    images = sorted((data_dir / "images").glob("*.jpg"))[:7]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(images[0].read_bytes()[:50])
    items = images[:3] + [broken] + images[3:] + [tmp_path / "missing.jpg"]
    seen, bad = [], {}
    for positions, pixels, errors in iter_pixels(items, model.image_size, 3):
        assert len(positions) == len(pixels) and len(positions) + len(errors) <= 3
        for pos, array in zip(positions, pixels):
            np.testing.assert_array_equal(array, load_image(items[pos], model.image_size))
        seen += positions
        bad.update({pos: str(exc) for pos, exc in errors})
    assert seen == [0, 1, 2, 4, 5, 6, 7]
    assert sorted(bad) == [3, 8] and "broken.jpg" in bad[3] and "no such file" in bad[8]


def test_pipelined_batches_equal_one_by_one(model, data_dir):
    images = sorted((data_dir / "images").glob("*.jpg"))
    one_by_one = np.concatenate([model.encode_pixels(load_image(p, model.image_size)[None]) for p in images])
    for batch_size in (1, 4, 64):
        np.testing.assert_allclose(model.encode_images(images, batch_size=batch_size), one_by_one, atol=1e-5)


def test_usable_cores_follow_the_affinity_mask():
    import os

    assert execution.usable_cores() == len(os.sched_getaffinity(0))
