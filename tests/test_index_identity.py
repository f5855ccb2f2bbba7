"""An index records the digest of the bundle that built it, and refuses a bundle of another digest even when
the embedding space is the same (labels, thresholds or preprocessing changed); indexes made before the
digest was recorded keep working by embedding space alone."""
import json
import sqlite3

import numpy as np
import pytest

import dagnn_runtime as dr
from dagnn_runtime.indexes.hnsw import HnswIndex
from dagnn_runtime.errors import MismatchError
from bundle_factory import bundle_dir, bundle_parts, data_dir, model, resign, write_bundle  # noqa: F401


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory):
    """The factory bundle with two labels swapped and the manifest re-signed: same graphs, same embedding
    space, another identity."""
    files, manifest = bundle_parts()
    labels = list(manifest["labels"])
    labels[0], labels[1] = labels[1], labels[0]
    path = write_bundle(tmp_path_factory.mktemp("relabelled") / "b", files, resign(dict(manifest, labels=labels)))
    return dr.load(path)


def _build(model, folder):
    index = dr.open_index(folder, model=model, modality="image", create=True)
    index.add(model.encode_texts(["sky", "sea"]), ["a", "b"], [{"path": "a.jpg"}, {"path": "b.jpg"}])
    index.save()
    index.close()


def test_the_relabelled_bundle_shares_the_space_but_not_the_digest(model, relabelled):
    assert relabelled.embedding_space == model.embedding_space
    assert relabelled.bundle_digest != model.bundle_digest


def test_an_index_records_the_digest_and_refuses_another_bundle(tmp_path, model, relabelled):
    _build(model, tmp_path / "ix")
    index = dr.open_index(tmp_path / "ix", model=model)
    assert index.info()["bundle_digest"] == model.bundle_digest
    index.close()
    with pytest.raises(MismatchError) as err:
        dr.open_index(tmp_path / "ix", model=relabelled)
    msg = str(err.value)
    assert model.bundle_digest[:8] in msg and relabelled.bundle_digest[:8] in msg
    assert model.bundle_digest not in msg  # shortened
    assert "labels, thresholds and preprocessing" in msg and "--expect-digest" in msg
    with pytest.raises(MismatchError):
        dr.Searcher.open(relabelled, tmp_path / "ix")
    # a plain embedding_space string is still checked by space alone
    dr.open_index(tmp_path / "ix", model=model.embedding_space).close()


def test_a_second_creator_with_another_bundle_is_refused(tmp_path, model, relabelled):
    _build(model, tmp_path / "ix")
    late = HnswIndex.for_model(relabelled, "image", location=tmp_path / "ix")
    with pytest.raises(MismatchError, match="built with another bundle"):
        late.save()


def test_an_index_without_a_recorded_digest_works_by_space(tmp_path, model, relabelled):
    """Indexes made before the digest was recorded: no digest in the store's meta."""
    _build(model, tmp_path / "ix")
    with sqlite3.connect(tmp_path / "ix" / "index.db") as conn:
        conn.execute("DELETE FROM meta WHERE key = 'bundle_digest'")
    for bundle in (model, relabelled):
        index = dr.open_index(tmp_path / "ix", model=bundle)
        assert index.info()["bundle_digest"] is None
        hits = index.search(model.encode_texts(["sky"]), k=1)[0]
        assert hits[0].id == "a"
        index.close()


def test_a_damaged_store_meta_is_an_index_file_error(tmp_path, model):
    _build(model, tmp_path / "ix")
    for bad in ("{not json", "[" * 200 + "]" * 200, json.dumps(12)):
        with sqlite3.connect(tmp_path / "ix" / "index.db") as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'bundle_digest'", (bad,))
        with pytest.raises(dr.IndexFileError, match="index .*ix"):
            dr.open_index(tmp_path / "ix")


def test_the_milvus_backend_records_and_checks_the_digest(tmp_path, model, relabelled):
    pytest.importorskip("pymilvus")
    uri = str(tmp_path / "m.db")
    index = dr.open_index(uri, model=model, modality="image", create=True)
    index.add(np.asarray(model.encode_texts(["sky"])), ["a"])
    assert index.info()["bundle_digest"] == model.bundle_digest
    index.close()
    with pytest.raises(MismatchError, match="labels, thresholds and preprocessing"):
        dr.open_index(uri, model=relabelled, modality="image")
    dr.open_index(uri, model=model, modality="image").close()
