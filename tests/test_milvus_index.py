"""Milvus backend against a real Milvus Lite (started from the pip package): lifecycle, refusals, filters
inside Milvus, persistence, agreement with exact search on demo photos encoded by a factory bundle."""
from pathlib import Path

import os
import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="needs the [milvus] extra (pymilvus, milvus-lite)")
pytest.importorskip("milvus_lite", reason="needs the [milvus] extra (milvus-lite)")

from dagnn_runtime.errors import IndexFileError, InputError, MismatchError  # noqa: E402
from dagnn_runtime.indexes.milvus import MilvusIndex, collection_exists, is_milvus_location  # noqa: E402
from bundle_factory import build_bundle, bundle_dir, model  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
SPACE = "a" * 64


def demo_images(n):
    found = sorted(REPO.glob("dagnn_export/**/mirflickr-mini/images"))
    if not found:
        pytest.skip("demo photos (dagnn_export/**/mirflickr-mini/images) not found")
    return sorted(found[0].glob("*.jpg"))[:n]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return str(tmp_path_factory.mktemp("milvus") / "photos.milvus.db")


@pytest.fixture(scope="module")
def photos(db, model):  # noqa: F811
    """200 demo photos encoded by the factory bundle, in a Milvus Lite collection."""
    paths = demo_images(200)
    emb = model.encode_images(paths)
    scores = model.score_labels(emb)
    meta = [{"path": os.path.abspath(p), "predicted_labels": [model.labels[int(np.argmax(s))]]} for p, s in zip(paths, scores)]
    index = MilvusIndex.open(db, modality="image", model=model, create=True)
    index.add(emb, [p.name for p in paths], meta)
    index.save()
    yield index, emb, [p.name for p in paths], meta
    index.close()


def test_locations_that_pick_milvus():
    assert is_milvus_location("x/photos.milvus.db") and is_milvus_location("http://host:19530")
    assert is_milvus_location("https://h") and is_milvus_location("tcp://h:19530")
    assert not is_milvus_location("index/image") and not is_milvus_location("index.dbx")


def test_search_agrees_with_exact_and_returns_metadata(photos):
    index, emb, ids, meta = photos
    assert len(index) == 200 and ids[7] in index and "nope.jpg" not in index
    asked = ids[::3] + [f"nope{i}.jpg" for i in range(1200)]  # more ids than one look-up takes
    assert index.present(asked) == set(ids[::3])
    assert index.metadata(ids[7]) == meta[7]
    approx = index.search(emb[:50], k=10)
    exact = index.search(emb[:50], k=10, exact=True)
    sims = emb[:50] @ emb.T
    for r in range(50):
        expected = [ids[j] for j in np.argsort(-sims[r], kind="stable")[:10]]
        np.testing.assert_allclose([h.score for h in exact[r]], np.sort(sims[r])[::-1][:10], atol=1e-5)
        assert {h.id for h in exact[r]} == set(expected) or abs(exact[r][-1].score - sims[r][expected[-1]]) < 1e-6
        assert exact[r][0].id == ids[r] and exact[r][0].metadata == meta[r]
    agree = np.mean([[a.id == e.id for a, e in zip(ra, re)] for ra, re in zip(approx, exact)])
    assert agree >= 0.95, agree


def test_labels_filter_runs_inside_milvus(photos, model):  # noqa: F811
    index, emb, ids, meta = photos
    wanted = meta[0]["predicted_labels"][0]
    carrying = {i for i, m in zip(ids, meta) if wanted in m["predicted_labels"]}
    hits = index.search(emb[-1:], k=500, labels=[wanted])[0]
    assert {h.id for h in hits} == carrying  # every carrier, nothing else (k exceeds their number)
    exact = index.search(emb[-1:], k=5, labels=wanted, exact=True)[0]
    assert [h.id for h in exact] == [h.id for h in hits[:5]]


def test_refusals_change_nothing(photos):
    index, emb, ids, _ = photos
    with pytest.raises(InputError, match="already in the index"):
        index.add(emb[:2], ["fresh-id", ids[0]])
    with pytest.raises(InputError, match="unknown ids"):
        index.remove([ids[0], "missing"])
    with pytest.raises(InputError, match="16-d"):
        index.search(emb[:1, :3])
    with pytest.raises(InputError, match="labels"):
        index.add(emb[:1], ["x"], [{"labels": "sky"}])
    assert len(index) == 200 and "fresh-id" not in index and ids[0] in index


def test_awkward_ids_add_remove_and_persist(db, model):  # noqa: F811
    index = MilvusIndex.open(db, modality="text", model=model, create=True)
    v = np.random.default_rng(0).standard_normal((3, model.embedding_dim))
    odd = ['say "cheese"', "back\\slash", "it's ünïcode"]
    index.add(v, odd, [{"tags": ["sky"]}, {}, {"labels": ["sea"]}])
    index.remove([odd[1]])
    index.save()
    index.close()
    assert collection_exists(db, "text") and not collection_exists(db) and not collection_exists(db + "x.db")
    again = MilvusIndex.open(db, modality="text", model=model)
    assert len(again) == 2 and odd[0] in again and odd[1] not in again
    assert [h.id for h in again.search(v[2], k=1, labels=["sea"])[0]] == [odd[2]]
    info = again.info()
    assert (info["collection"], info["items"], info["index_params"]) == ("dagnn_text", 2, {"M": 16, "efConstruction": 200})
    again.close()


def test_other_space_refused_like_hnsw(db, photos, tmp_path):
    other = __import__("dagnn_runtime").load(build_bundle(tmp_path / "other", seed=5))
    with pytest.raises(MismatchError, match=r"space .*…, the bundle produces space .*…: rebuild the index"):
        MilvusIndex.open(db, modality="image", model=other)


def test_errors_are_one_line_naming_uri_and_collection(tmp_path):
    with pytest.raises(IndexFileError, match=r"photos\.db collection dagnn_image: no such Milvus Lite database"):
        MilvusIndex.open(str(tmp_path / "photos.db"), modality="image")
    with pytest.raises(IndexFileError) as err:
        MilvusIndex.open("http://127.0.0.1:9/", modality="image", timeout=2)
    assert "http://127.0.0.1:9/ collection dagnn_image: connect failed" in str(err.value)
    assert "\n" not in str(err.value)
