"""The hnswlib backend: lifecycle, refusal of bad additions, label filter, persistence, recall against exact
search."""
import os
import numpy as np
import pytest

import dagnn_runtime as dr
from dagnn_runtime.indexes.hnsw import HnswIndex
from dagnn_runtime.indexes.store import DB_FILE, Store
from dagnn_runtime.metrics import l2_normalize
from bundle_factory import build_bundle, bundle_dir, model  # noqa: F401

SPACE = "a" * 64


def random_vectors(n, d=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def query(index, vectors, **kwargs):
    """(ids, scores, metadata) per query row, from ``search``'s hits."""
    hits = index.search(vectors, **kwargs)
    return ([[h.id for h in row] for row in hits], np.array([[h.score for h in row] for row in hits], np.float32),
            [[h.metadata for h in row] for row in hits])


def make_index(n=40, d=16, **kwargs):
    v = random_vectors(n, d)
    ids = [f"item{i}" for i in range(n)]
    meta = [{"path": f"img/{i}.jpg", "labels": ["sky"] if i % 2 else []} for i in range(n)]
    return HnswIndex.build(v, ids, meta, embedding_space=SPACE, modality="image", **kwargs), v, ids


def test_query_finds_items_with_cosine_scores_and_metadata():
    index, v, ids = make_index()
    got_ids, scores, meta = query(index, v[:3] * 5.0, k=4)  # scale does not matter: cosine
    assert [row[0] for row in got_ids] == ids[:3]
    assert scores.shape == (3, 4) and scores.dtype == np.float32
    exact = l2_normalize(v[:3]) @ l2_normalize(v).T
    for r in range(3):
        expected = [ids[j] for j in np.argsort(-exact[r])[:4]]
        assert got_ids[r] == expected
        np.testing.assert_allclose(scores[r], np.sort(exact[r])[::-1][:4], atol=1e-5)
    assert meta[1][0] == {"path": os.path.abspath("img/1.jpg"), "labels": ["sky"]}  # the caller's relative path, kept absolute
    assert len(index) == 40 and "item3" in index and "nope" not in index
    assert index.present(["item3", "nope", "item39", "item3"]) == {"item3", "item39"}


def test_capacity_grows_without_being_declared():
    index = HnswIndex(16, SPACE, capacity=4)
    v = random_vectors(100)
    for start in range(0, 100, 7):
        index.add(v[start:start + 7], [str(i) for i in range(start, min(start + 7, 100))])
    assert len(index) == 100 and index.capacity >= 100
    ids, _, _ = query(index, v, k=1)
    assert [row[0] for row in ids] == [str(i) for i in range(100)]


def test_bad_additions_change_nothing():
    index, v, ids = make_index(n=10)
    before = query(index, v, k=3)
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
    after = query(index, v, k=3)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])


def test_removed_items_are_never_returned_and_can_be_added_again():
    index, v, ids = make_index(n=30)
    index.remove(["item0", "item1"])
    got, _, _ = query(index, v[:2], k=28)
    assert all("item0" not in row and "item1" not in row for row in got)
    assert len(index) == 28 and len(got[0]) == 28
    # removing nearly everything still answers (exact fallback when HNSW cannot find k live items)
    index.remove([f"item{i}" for i in range(2, 27)])
    got, scores, _ = query(index, v[:1], k=10)
    assert sorted(got[0]) == ["item27", "item28", "item29"] and scores.shape == (1, 3)
    index.add(v[:1], ["item0"], [{"again": True}])
    got, _, meta = query(index, v[:1], k=1)
    assert got == [["item0"]] and meta == [[{"again": True}]]


def test_save_and_load_round_trip(tmp_path):
    index, v, ids = make_index(n=50, ef=77)
    index.remove(["item5"])
    index.save(tmp_path / "idx")
    loaded = HnswIndex.load(tmp_path / "idx")
    assert loaded.info() == index.info() and loaded.info()["ef"] == 77
    for exact in (False, True):
        a, b = query(index, v, k=5, exact=exact), query(loaded, v, k=5, exact=exact)
        assert a[0] == b[0] and a[2] == b[2]
        np.testing.assert_allclose(a[1], b[1], atol=1e-6)
    assert all("item5" not in row for row in query(loaded, v, k=49)[0])
    # the loaded index keeps working: add past its capacity, save over the old folder atomically
    loaded.add(random_vectors(20, seed=3), [f"more{i}" for i in range(20)])
    loaded.save(tmp_path / "idx")
    again = HnswIndex.load(tmp_path / "idx")
    assert len(again) == 69 and "more19" in again and "item5" not in again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    again.close()
    assert {p.name.split("-")[0] for p in (tmp_path / "idx").iterdir()} == {"graph", "index.db"}
    assert Store(tmp_path / "idx").meta["embedding_space"] == SPACE


def test_corrupt_or_missing_index_files_are_refused(tmp_path):
    index, _, _ = make_index(n=10)
    index.save(tmp_path / "idx")
    index.close()
    db = tmp_path / "idx" / DB_FILE
    db.write_bytes(db.read_bytes()[:100] + b"\xff" * (db.stat().st_size - 100))
    with pytest.raises(dr.IndexFileError, match="idx: index.db is corrupt"):
        HnswIndex.load(tmp_path / "idx")
    db.unlink()
    with pytest.raises(dr.IndexFileError, match="no index.db"):
        HnswIndex.load(tmp_path / "idx")
    with pytest.raises(dr.IndexFileError, match="no such folder"):
        HnswIndex.load(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(dr.IndexFileError, match="no index.db"):
        HnswIndex.load(tmp_path / "other")
    again, _, _ = make_index(n=10)
    with pytest.raises(dr.IndexFileError, match="refusing to create an index in .*other: it holds other files"):
        again.save(tmp_path / "other")
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["photo.jpg"]


def test_index_refuses_a_bundle_of_another_embedding_space(tmp_path, model):
    index = HnswIndex.for_model(model, "text")
    index.add(model.encode_texts(["sky", "sea beach"]), ["a", "b"])
    index.save(tmp_path / "idx")
    assert len(HnswIndex.load(tmp_path / "idx", model=model)) == 2
    other = dr.load(build_bundle(tmp_path / "other", seed=5))
    with pytest.raises(dr.MismatchError, match="rebuild the index"):
        HnswIndex.load(tmp_path / "idx", model=other)
    with pytest.raises(dr.InputError, match="embedding_space"):
        HnswIndex(16, "")


def test_small_and_empty_indexes():
    index = HnswIndex(8, SPACE)
    ids, scores, meta = query(index, random_vectors(2, 8), k=5)
    assert ids == [[], []] and scores.shape == (2, 0)
    index.add(random_vectors(3, 8), ["a", "b", "c"])
    ids, scores, _ = query(index, random_vectors(1, 8, seed=2), k=10)
    assert sorted(ids[0]) == ["a", "b", "c"]
    with pytest.raises(dr.InputError, match="k must be a positive integer"):
        query(index, random_vectors(1, 8), k=0)


def test_hnsw_recall_at_10_against_exact():
    n, d = 3000, 64
    v = random_vectors(n, d, seed=7)
    index = HnswIndex.build(v, [str(i) for i in range(n)], embedding_space=SPACE, M=16, ef_construction=200)
    queries = random_vectors(200, d, seed=8)
    exact_ids, exact_scores, _ = query(index, queries, k=10, exact=True)
    # the exact mode is itself checked against plain numpy
    reference = np.argsort(-(l2_normalize(queries) @ l2_normalize(v).T), axis=1)[:, :10]
    assert exact_ids == [[str(j) for j in row] for row in reference]
    hnsw_ids, _, _ = query(index, queries, k=10, ef=200)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw_ids, exact_ids)])
    assert recall >= 0.99, recall


def test_labels_filter_keeps_only_items_carrying_any_of_them():
    n = 200
    v = random_vectors(n, seed=11)
    meta = [{"labels": ["sky"]} if i % 3 == 0 else {"predicted_labels": ["sea"]} if i % 3 == 1 else {}
            for i in range(n)]
    index = HnswIndex.build(v, [str(i) for i in range(n)], meta, embedding_space=SPACE)
    sky = {str(i) for i in range(0, n, 3)}
    sea = {str(i) for i in range(1, n, 3)}
    for exact in (False, True):
        got = index.search(v[:5], k=10, labels=["sky"], exact=exact)
        assert all(len(row) == 10 and {h.id for h in row} <= sky for row in got)
        both = index.search(v[:5], k=50, labels=["sky", "sea"], exact=exact)
        assert all({h.id for h in row} <= sky | sea for row in both)
        assert any({h.id for h in row} & sea for row in both) and any({h.id for h in row} & sky for row in both)
    # the filtered graph search finds what exact filtered search finds
    exact_ids = [[h.id for h in row] for row in index.search(v[:20], k=5, labels="sea", exact=True)]
    graph_ids = [[h.id for h in row] for row in index.search(v[:20], k=5, labels="sea", ef=200)]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact_ids, graph_ids)]) >= 0.95
    # fewer matches than k: all of them; no match: nothing; removed items never come back
    assert len(index.search(v[:1], k=10, labels=["nothing"])[0]) == 0
    index.remove([str(i) for i in range(3, n, 3)])
    assert [h.id for h in index.search(v[:1], k=10, labels=["sky"])[0]] == ["0"]
    with pytest.raises(dr.InputError, match="labels must be"):
        index.search(v[:1], labels=[])


def test_labels_filter_after_reopening_and_on_items_added_since(tmp_path):
    """The label filter's lookup is built at the first filtered search, from the items a reopened index
    names through its checkpoint, and then follows additions and removals."""
    v = random_vectors(30, seed=5)
    meta = [{"labels": ["sky"]} if i % 2 else {"labels": ["sea"]} for i in range(30)]
    index = HnswIndex.build(v[:20], [str(i) for i in range(20)], meta[:20], embedding_space=SPACE)
    index.save(tmp_path / "ix")
    index.checkpoint()
    index.close()
    again = HnswIndex.load(tmp_path / "ix")
    sky = {h.id for h in again.search(v[:1], k=30, labels=["sky"])[0]}
    assert sky == {str(i) for i in range(1, 20, 2)}
    again.add(v[20:], [str(i) for i in range(20, 30)], meta[20:])
    again.remove(["1", "3"])
    sky = {h.id for h in again.search(v[:1], k=30, labels=["sky"], exact=True)[0]}
    assert sky == {str(i) for i in range(5, 30, 2)}
    again.close()


def test_save_writes_to_its_own_location_and_only_when_changed(tmp_path):
    index, v, _ = make_index(n=10)
    assert index.location is None
    with pytest.raises(dr.InputError, match="in memory only"):
        index.save()
    index.save(tmp_path / "idx")
    assert index.location == str(tmp_path / "idx")
    loaded = HnswIndex.load(tmp_path / "idx")
    assert loaded.location == str(tmp_path / "idx") and isinstance(loaded, dr.VectorIndex)
    files = sorted(p.name for p in (tmp_path / "idx").iterdir())
    loaded.save()  # nothing changed: nothing written
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == files
    loaded.add(random_vectors(1, seed=4), ["new"], [{"labels": ["sky"]}])
    loaded.save()
    again = HnswIndex.load(tmp_path / "idx")
    assert "new" in again and [h.id for h in again.search(random_vectors(1, seed=4), k=1, labels="sky")[0]] == ["new"]


def test_a_reader_sees_another_writers_changes_and_close_frees(tmp_path):
    index, v, _ = make_index(n=10)
    index.save(tmp_path / "idx")
    reader, writer = HnswIndex.load(tmp_path / "idx"), HnswIndex.load(tmp_path / "idx")
    writer.remove(["item0"])  # committed when remove returns: no save needed
    reader.refresh()
    assert "item0" not in reader and len(reader) == 9
    assert query(reader, v[:1], k=9)[0][0][0] != "item0"
    writer.add(random_vectors(1, seed=9), ["late"])
    reader.add(random_vectors(1, seed=8), ["mine"])  # both kept: each change is its own transaction
    assert {"late", "mine"} <= set(reader.ids) and {"late", "mine"} <= set(writer.ids)
    reader.close()
    with pytest.raises(dr.IndexFileError, match="is closed"):
        reader.search(v[:1])
