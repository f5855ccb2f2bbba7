"""Encoding, label scoring and tagging through a loaded bundle, checked against the graphs' own maths."""
import io
import threading

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

import dagnn_runtime as dr
from dagnn_runtime.preprocess import load_batch
from dagnn_runtime.metrics import l2_normalize
from dagnn_runtime.errors import ImageInputError
from dagnn_runtime.preprocess import load_image
from bundle_factory import bundle_dir, data_dir, model  # noqa: F401


def weights(bundle_dir, name):
    graph = onnx.load(str(bundle_dir / name)).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


@pytest.fixture(scope="module")
def images(data_dir):
    return sorted((data_dir / "images").glob("*.jpg"), key=lambda p: int(p.stem[2:]))


def test_image_embeddings_are_the_graph_maths_normalised(model, bundle_dir, images):
    w = weights(bundle_dir, "image_encoder.onnx")
    pixels = np.stack([load_image(p, model.image_size) for p in images]).astype(np.float64) / 255
    expected = np.tanh(pixels.mean(axis=(1, 2)).astype(np.float32) @ w["w1"]) @ w["w2"]
    emb = model.encode_images(images)
    assert emb.shape == (len(images), model.embedding_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(emb, l2_normalize(expected), atol=1e-5)


def test_every_image_input_kind_gives_the_same_embedding(model, images):
    path = images[0]
    data = path.read_bytes()
    pil = Image.open(io.BytesIO(data))
    array = np.asarray(Image.open(path).convert("RGB"))
    emb = model.encode_images([path, str(path), data, pil, array])
    np.testing.assert_allclose(emb, np.repeat(emb[:1], 5, axis=0), atol=1e-6)
    np.testing.assert_array_equal(model.encode_images(path), emb[:1])  # a single item is a list of one
    batch = np.stack([load_image(p) for p in images[:3]])
    np.testing.assert_allclose(model.encode_images(batch), model.encode_images(images[:3]), atol=1e-6)


def test_one_by_one_equals_batched(model, images):
    batched = model.encode_images(images, batch_size=7)
    single = np.concatenate([model.encode_images([p], batch_size=1) for p in images])
    np.testing.assert_allclose(single, batched, atol=1e-5)
    texts = ["sky clouds", "dog; cat", "sea, beach, water", "night city lights"]
    np.testing.assert_allclose(np.concatenate([model.encode_texts([t]) for t in texts]),
                               model.encode_texts(texts, batch_size=3), atol=1e-6)


def test_empty_inputs_give_empty_matrices(model):
    assert model.encode_images([]).shape == (0, model.embedding_dim)
    assert model.encode_texts([]).shape == (0, model.embedding_dim)


def test_text_embeddings_are_bag_of_words_through_the_graph(model, bundle_dir):
    w = weights(bundle_dir, "text_encoder.onnx")["w"]
    vocab = list(model.vocab)
    bow = np.zeros((2, len(vocab)), np.float32)
    bow[0, [vocab.index("sky"), vocab.index("clouds")]] = 1
    bow[1, [vocab.index("dog"), vocab.index("cat")]] = 1
    emb = model.encode_texts(["Sky, CLOUDS", ["dog", "cat", "unknowntag"]])
    np.testing.assert_allclose(emb, l2_normalize(bow @ w), atol=1e-6)
    np.testing.assert_array_equal(model.encode_bow(bow), emb)
    assert model.parse_text("sky skyy sky") == (["sky"], ["skyy"])


def test_text_without_a_known_tag_names_the_closest_tags(model):
    with pytest.raises(dr.InputError, match=r"'clowds' \(closest: clouds\).*'bech' \(closest: beach\)"):
        model.encode_texts(["clowds bech"])
    with pytest.raises(dr.InputError, match=r"text 1 \('qqqq'\).*'qqqq' \(no close tag\)"):
        model.encode_texts(["sky", "qqqq"])
    with pytest.raises(dr.InputError, match="is empty"):
        model.encode_texts([" ,; "])
    with pytest.raises(dr.InputError, match="string or a list of tag strings"):
        model.encode_texts([3])
    with pytest.raises(dr.InputError, match="bag of words has shape"):
        model.encode_bow(np.zeros((1, 5)))


def test_score_labels_is_cosine_with_z_and_matches_the_graph(model, images):
    emb = model.encode_images(images[:5])
    z = l2_normalize(model.classifiers)
    np.testing.assert_allclose(model.score_labels(emb), emb @ z.T, atol=1e-6)
    graph_scores = model._run("image_encoder", load_batch(images[:5], model.image_size))[1]
    np.testing.assert_allclose(model.score_labels(emb), graph_scores, atol=1e-5)
    np.testing.assert_allclose(model.score_labels(emb[0] * 7), model.score_labels(emb[:1]), atol=1e-6)
    with pytest.raises(dr.InputError, match="expected \\(n, 16\\)"):
        model.score_labels(np.ones((2, 3)))


def test_labels_above_threshold_are_exactly_those_passing_sorted(model, images):
    scores = model.score_labels(model.encode_images(images))
    tags = model.labels_above_threshold(scores)
    assert len(tags) == len(images)
    for row, item_tags in zip(scores, tags):
        expected = {model.labels[j] for j in np.flatnonzero(row >= model.thresholds)}
        assert {label for label, _ in item_tags} == expected
        values = [s for _, s in item_tags]
        assert values == sorted(values, reverse=True)
        for label, s in item_tags:
            assert s == pytest.approx(row[model.labels.index(label)], abs=1e-6)
    assert any(len(t) >= 2 for t in tags), "fixture should exercise sorting"
    capped = model.labels_above_threshold(scores, top=1)
    assert all(c == t[:1] for c, t in zip(capped, tags))
    text_scores = model.score_labels(model.encode_texts(["sky clouds"]))[0]
    text_tags = model.labels_above_threshold(text_scores)[0]
    assert {l for l, _ in text_tags} == {model.labels[j] for j in np.flatnonzero(text_scores >= model.thresholds)}


def test_unreadable_images_are_named(model, tmp_path, images):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(images[0].read_bytes()[:100])
    with pytest.raises(dr.ImageInputError, match="broken.jpg.*cannot decode"):
        model.encode_images([broken])
    with pytest.raises(ImageInputError, match="item 1: image .*missing.jpg.*no such file"):
        model.encode_images([images[0], tmp_path / "missing.jpg"])
    with pytest.raises(dr.InputError, match="batch_size"):
        model.encode_images(images, batch_size=0)


def test_concurrent_callers_get_the_serial_answers(model, images):
    expected = model.encode_images(images)
    texts = ["sky clouds", "sea beach"]
    expected_t = model.encode_texts(texts)
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append((model.encode_images(images), model.encode_texts(texts)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    for emb, temb in results:
        np.testing.assert_allclose(emb, expected, atol=1e-6)
        np.testing.assert_allclose(temb, expected_t, atol=1e-6)
