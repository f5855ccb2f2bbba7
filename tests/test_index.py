"""HNSW index: lifecycle, refusal of bad additions, persistence, recall against exact search."""
import json

import numpy as np
import pytest

import dagnn_runtime as dr
from dagnn_runtime.index import GRAPH_FILE, META_FILE
from dagnn_runtime.metrics import l2_normalize
from bundle_factory import build_bundle, bundle_dir, model  # noqa: F401

SPACE = "a" * 64


def random_vectors(n, d=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def make_index(n=40, d=16, **kwargs):
    v = random_vectors(n, d)
    ids = [f"item{i}" for i in range(n)]
    meta = [{"path": f"img/{i}.jpg", "labels": ["sky"] if i % 2 else []} for i in range(n)]
    return dr.Index.build(v, ids, meta, embedding_space=SPACE, modality="image", **kwargs), v, ids


def test_query_finds_items_with_cosine_scores_and_metadata():
    index, v, ids = make_index()
    got_ids, scores, meta = index.query(v[:3] * 5.0, k=4)  # scale does not matter: cosine
    assert [row[0] for row in got_ids] == ids[:3]
    assert scores.shape == (3, 4) and scores.dtype == np.float32
    exact = l2_normalize(v[:3]) @ l2_normalize(v).T
    for r in range(3):
        expected = [ids[j] for j in np.argsort(-exact[r])[:4]]
        assert got_ids[r] == expected
        np.testing.assert_allclose(scores[r], np.sort(exact[r])[::-1][:4], atol=1e-5)
    assert meta[1][0] == {"path": "img/1.jpg", "labels": ["sky"]}
    assert len(index) == 40 and "item3" in index and "nope" not in index


def test_capacity_grows_without_being_declared():
    index = dr.Index(16, SPACE, capacity=4)
    v = random_vectors(100)
    for start in range(0, 100, 7):
        index.add(v[start:start + 7], [str(i) for i in range(start, min(start + 7, 100))])
    assert len(index) == 100 and index.capacity >= 100
    ids, _, _ = index.query(v, k=1)
    assert [row[0] for row in ids] == [str(i) for i in range(100)]


def test_bad_additions_change_nothing():
    index, v, ids = make_index(n=10)
    before = index.query(v, k=3)
    cases = [
        (lambda: index.add(random_vectors(1, d=8), ["new"]), "8\\).*16-d"),
        (lambda: index.add(random_vectors(2), ["new", "item3"]), "'item3' is already in the index"),
        (lambda: index.add(random_vectors(2), ["x", "x"]), "'x' appears twice"),
        (lambda: index.add(np.zeros((1, 16)), ["z"]), "all-zero vector"),
        (lambda: index.add(np.full((1, 16), np.nan), ["z"]), "NaN"),
        (lambda: index.add(random_vectors(1), ["m"], [{"f": object()}]), "not plain JSON"),
        (lambda: index.add(random_vectors(2), ["a"]), "2 vectors but 1 ids"),
        (lambda: index.remove(["item1", "ghost"]), "'ghost' is not in the index"),
    ]
    for action, message in cases:
        with pytest.raises(dr.InputError, match=message):
            action()
        assert len(index) == 10 and sorted(index.ids) == sorted(ids)
    after = index.query(v, k=3)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])


def test_removed_items_are_never_returned_and_can_be_added_again():
    index, v, ids = make_index(n=30)
    index.remove(["item0", "item1"])
    got, _, _ = index.query(v[:2], k=28)
    assert all("item0" not in row and "item1" not in row for row in got)
    assert len(index) == 28 and len(got[0]) == 28
    # removing nearly everything still answers (exact fallback when HNSW cannot find k live items)
    index.remove([f"item{i}" for i in range(2, 27)])
    got, scores, _ = index.query(v[:1], k=10)
    assert sorted(got[0]) == ["item27", "item28", "item29"] and scores.shape == (1, 3)
    index.add(v[:1], ["item0"], [{"again": True}])
    got, _, meta = index.query(v[:1], k=1)
    assert got == [["item0"]] and meta == [[{"again": True}]]


def test_save_and_load_round_trip(tmp_path):
    index, v, ids = make_index(n=50, ef=77)
    index.remove(["item5"])
    index.save(tmp_path / "idx")
    loaded = dr.Index.load(tmp_path / "idx")
    assert loaded.info() == index.info() and loaded.info()["ef"] == 77
    for exact in (False, True):
        a, b = index.query(v, k=5, exact=exact), loaded.query(v, k=5, exact=exact)
        assert a[0] == b[0] and a[2] == b[2]
        np.testing.assert_allclose(a[1], b[1], atol=1e-6)
    assert all("item5" not in row for row in loaded.query(v, k=49)[0])
    # the loaded index keeps working: add past its capacity, save over the old folder atomically
    loaded.add(random_vectors(20, seed=3), [f"more{i}" for i in range(20)])
    loaded.save(tmp_path / "idx")
    again = dr.Index.load(tmp_path / "idx")
    assert len(again) == 69 and "more19" in again and "item5" not in again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    stored = json.loads((tmp_path / "idx" / META_FILE).read_text())
    assert stored["format"] == "dagnn-index" and stored["embedding_space"] == SPACE


def test_corrupt_or_missing_index_files_are_refused(tmp_path):
    index, _, _ = make_index(n=10)
    index.save(tmp_path / "idx")
    graph = tmp_path / "idx" / GRAPH_FILE
    data = bytearray(graph.read_bytes())
    data[-5] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(dr.IndexFileError, match="graph.hnsw does not match"):
        dr.Index.load(tmp_path / "idx")
    graph.unlink()
    with pytest.raises(dr.IndexFileError, match="missing graph.hnsw"):
        dr.Index.load(tmp_path / "idx")
    with pytest.raises(dr.IndexFileError, match="no such folder"):
        dr.Index.load(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(dr.IndexFileError, match="missing index.json"):
        dr.Index.load(tmp_path / "other")
    with pytest.raises(dr.IndexFileError, match="not an index folder"):
        index.save(tmp_path / "other")
    assert (tmp_path / "other" / "photo.jpg").exists()


def test_index_refuses_a_bundle_of_another_embedding_space(tmp_path, model):
    index = dr.Index.for_model(model, "text")
    index.add(model.encode_texts(["sky", "sea beach"]), ["a", "b"])
    index.save(tmp_path / "idx")
    assert len(dr.Index.load(tmp_path / "idx", model=model)) == 2
    other = dr.load(build_bundle(tmp_path / "other", seed=5))
    with pytest.raises(dr.MismatchError, match="rebuild the index"):
        dr.Index.load(tmp_path / "idx", model=other)
    with pytest.raises(dr.InputError, match="embedding_space"):
        dr.Index(16, "")


def test_small_and_empty_indexes():
    index = dr.Index(8, SPACE)
    ids, scores, meta = index.query(random_vectors(2, 8), k=5)
    assert ids == [[], []] and scores.shape == (2, 0)
    index.add(random_vectors(3, 8), ["a", "b", "c"])
    ids, scores, _ = index.query(random_vectors(1, 8, seed=2), k=10)
    assert sorted(ids[0]) == ["a", "b", "c"]
    with pytest.raises(dr.InputError, match="k must be a positive integer"):
        index.query(random_vectors(1, 8), k=0)


def test_hnsw_recall_at_10_against_exact():
    n, d = 3000, 64
    v = random_vectors(n, d, seed=7)
    index = dr.Index.build(v, [str(i) for i in range(n)], embedding_space=SPACE, M=16, ef_construction=200)
    queries = random_vectors(200, d, seed=8)
    exact_ids, exact_scores, _ = index.query(queries, k=10, exact=True)
    # the exact mode is itself checked against plain numpy
    reference = np.argsort(-(l2_normalize(queries) @ l2_normalize(v).T), axis=1)[:, :10]
    assert exact_ids == [[str(j) for j in row] for row in reference]
    hnsw_ids, _, _ = index.query(queries, k=10, ef=200)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw_ids, exact_ids)])
    assert recall >= 0.99, recall
