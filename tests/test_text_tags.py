"""Format-2 bundles: the text graph takes padded tag ids and must answer exactly like the bag-of-words graph
of format 1 with the same weights, whatever the batching."""
import numpy as np
import pytest

import dagnn_runtime as dr
from dagnn_runtime import text_ids
from dagnn_runtime.dataset import bag_of_words
from bundle_factory import VOCAB, build_bundle, bundle_parts, resign, write_bundle


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("tags")
    return dr.load(build_bundle(root / "v1")), dr.load(build_bundle(root / "v2", tag_ids=True))


def texts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [list(rng.choice(VOCAB, size=int(rng.integers(1, 12)), replace=False)) for _ in range(n)]


def test_tag_ids_and_bag_of_words_graphs_agree(pair):
    bow_model, tag_model = pair
    assert tag_model.manifest["format_version"] == 2
    items = texts(300)
    expected = bow_model.encode_texts(items)
    np.testing.assert_allclose(tag_model.encode_texts(items), expected, atol=1e-6)
    bow = bag_of_words(items, {t: j for j, t in enumerate(VOCAB)})
    np.testing.assert_allclose(tag_model.encode_bow(bow), expected, atol=1e-6)
    np.testing.assert_allclose(tag_model.encode_texts(["sky, clouds"]), bow_model.encode_texts(["sky, clouds"]),
                               atol=1e-6)


def test_chunking_keeps_each_text_in_its_row(pair, monkeypatch):
    """Texts are sorted by length and split into chunks; every answer must come back to its own row."""
    bow_model, tag_model = pair
    items = texts(57, seed=1)
    expected = bow_model.encode_texts(items)
    monkeypatch.setattr(text_ids, "MAX_TAG_SLOTS", 20)
    for batch_size in (1, 3, 256):
        np.testing.assert_allclose(tag_model.encode_texts(items, batch_size=batch_size), expected, atol=1e-6)


def test_one_text_alone_answers_as_in_a_batch(pair):
    """A single text skips sorting and padding; its answer must equal its row of a batch, an empty bag of
    words (one pad slot) included."""
    bow_model, tag_model = pair
    items = texts(6, seed=2)
    batch = tag_model.encode_texts(items)
    for i, item in enumerate(items):
        np.testing.assert_allclose(tag_model.encode_texts([item]), batch[i:i + 1], atol=1e-6)
    empty = np.zeros((1, len(VOCAB)), np.float32)
    np.testing.assert_allclose(tag_model.encode_bow(empty), bow_model.encode_bow(empty), atol=1e-6)
    rows, chunk = next(text_ids.tag_id_batches([[]], pad=len(VOCAB)))
    assert rows.tolist() == [0] and chunk.tolist() == [[len(VOCAB)]]


def test_tag_model_refuses_what_it_cannot_encode(pair):
    _, tag_model = pair
    with pytest.raises(dr.InputError, match="only 0 and 1"):
        tag_model.encode_bow(np.full((1, len(VOCAB)), 0.5, np.float32))
    with pytest.raises(dr.InputError, match="no tag is in the bundle vocabulary"):
        tag_model.encode_texts(["zzzz"])
    assert tag_model.encode_bow(np.zeros((0, len(VOCAB)), np.float32)).shape == (0, 16)


def test_a_pad_id_other_than_the_vocabulary_size_is_refused(tmp_path):
    files, manifest = bundle_parts(tag_ids=True)
    manifest["graphs"]["text_encoder"]["pad_id"] = 3
    with pytest.raises(dr.BundleError, match="pad_id is '3', not the vocabulary size 20"):
        dr.load(write_bundle(tmp_path / "p", files, resign(manifest)))
