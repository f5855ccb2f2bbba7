"""One stored item never takes an index down, and the store says when it is wrong: write-time bounds equal
read-time bounds, a record no reader can render is left out (logged once), a changed vector is caught by
its row checksum, and a store whose files were removed or replaced refuses writes instead of losing them."""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3

import numpy as np
import pytest

import dagnn_runtime as dr
from bundle_factory import bundle_dir, data_dir, model  # noqa: F401  (fixtures)
from dagnn_runtime.indexes.inputs import RECORD_MAX_BYTES, RECORD_MAX_DEPTH


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def _build(model, folder, n=6):
    index = dr.open_index(folder, model=model, modality="image", create=True)
    texts = ["sky", "sea", "night", "clouds", "water", "animal"][:n]
    index.add(model.encode_texts(texts), [f"i{k}" for k in range(n)],
              [{"path": f"{k}.jpg", "labels": ["sky"] if k % 2 else ["sea"]} for k in range(n)])
    index.save()
    return index


@pytest.mark.parametrize("meta, problem", [
    (_nested(RECORD_MAX_DEPTH + 1), "levels deep"),
    ({"note": "x" * (RECORD_MAX_BYTES + 1)}, "bytes as JSON"),
    ({"note": "lone \ud800 surrogate"}, "lone surrogate"),
    ({"score": float("nan")}, "not plain JSON"),
])
def test_metadata_a_reader_would_refuse_is_refused_at_write_time(tmp_path, model, meta, problem):
    index = _build(model, tmp_path / "ix")
    with pytest.raises(dr.InputError, match=problem):
        index.add(model.encode_texts(["sky"]), ["bad"], [meta])
    assert "bad" not in index and len(index) == 6
    index.add(model.encode_texts(["sky"]), ["deep-enough"], [_nested(RECORD_MAX_DEPTH)])  # the bound itself
    assert dr.open_index(tmp_path / "ix").metadata("deep-enough") == _nested(RECORD_MAX_DEPTH)


def test_a_record_no_reader_can_render_is_left_out_never_failing_a_query(tmp_path, model, caplog):
    _build(model, tmp_path / "ix").close()
    with sqlite3.connect(tmp_path / "ix" / "index.db") as conn:  # as an older version could have stored it
        conn.execute("UPDATE items SET metadata = ?, crc = NULL WHERE id = 'i1'",
                     ('{"labels": ["sky"], "x": ' + "[" * 100 + "]" * 100 + "}",))
    index = dr.open_index(tmp_path / "ix")
    query = model.encode_texts(["sea"])
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            ids = [h.id for h in index.search(query, k=6)[0]]
            assert "i1" not in ids and len(ids) == 5
            assert sorted(h.id for h in index.search(query, k=6, labels=["sky"])[0]) == ["i3", "i5"]
    assert sum("i1" in r.getMessage() for r in caplog.records) == 1  # logged once, not once per query
    index.remove(["i1"])  # the delete goes through whole: store and graph
    assert "i1" not in index and len(index) == 5 and len(index.search(query, k=6)[0]) == 5
    index.close()
    assert len(dr.open_index(tmp_path / "ix")) == 5


def test_a_vector_changed_on_disk_is_caught_by_its_checksum(tmp_path, model, caplog):
    _build(model, tmp_path / "ix").close()
    for leftover in (tmp_path / "ix").glob("graph-*.hnsw"):
        leftover.unlink()  # replay every row from the database
    with sqlite3.connect(tmp_path / "ix" / "index.db") as conn:
        (vector,) = conn.execute("SELECT vector FROM items WHERE id = 'i2'").fetchone()
        changed = bytearray(vector)
        changed[5] ^= 0x40  # one bit of one float: what a cut or rewritten page can do
        conn.execute("UPDATE items SET vector = ? WHERE id = 'i2'", (bytes(changed),))
    with caplog.at_level(logging.ERROR):
        index = dr.open_index(tmp_path / "ix")
    assert "i2" not in [h.id for h in index.search(model.encode_texts(["night"]), k=6)[0]]
    assert index.info()["damaged"] == ["i2"]
    assert any("'i2'" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    index.close()


def test_an_index_made_before_row_checksums_gains_them(tmp_path, model):
    _build(model, tmp_path / "ix").close()
    with sqlite3.connect(tmp_path / "ix" / "index.db") as conn:
        conn.execute("ALTER TABLE items DROP COLUMN crc")
    index = dr.open_index(tmp_path / "ix")
    assert len(index.search(model.encode_texts(["sky"]), k=6)[0]) == 6  # read as before
    index.add(model.encode_texts(["sea"]), ["new"], [{}])  # the first write adds the column
    index.close()
    with sqlite3.connect(tmp_path / "ix" / "index.db") as conn:
        rows = dict(conn.execute("SELECT id, crc FROM items"))
    assert rows["new"] is not None and rows["i0"] is None


@pytest.mark.parametrize("what", ["index.db", "index.db-wal"])
def test_writes_are_refused_once_the_database_files_were_removed_or_replaced(tmp_path, model, what):
    index = _build(model, tmp_path / "ix")
    index.add(model.encode_texts(["sky"]), ["before"], [{}])  # the WAL file exists now
    path = tmp_path / "ix" / what
    copy = tmp_path / "copy"
    shutil.copy(path, copy)
    os.unlink(path)
    if what == "index.db":
        shutil.copy(copy, path)  # replaced by a copy: another file under the same name
    with pytest.raises(dr.IndexFileError, match="removed or replaced while open"):
        index.add(model.encode_texts(["sea"]), ["after"], [{}])
    with pytest.raises(dr.IndexFileError, match="removed or replaced"):
        index.remove(["before"])
    assert len(index.search(model.encode_texts(["sky"]), k=3)[0]) == 3  # reads go on
    index.close()


def test_the_server_answers_503_to_writes_after_its_database_was_replaced(tmp_path, bundle_dir, data_dir, model):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("starlette", reason="needs the [serve] extra")
    from serve_helpers import build_index, serve

    index = build_index(model, data_dir, tmp_path / "index")
    photo = next((data_dir / "images").glob("*.jpg")).read_bytes()
    with serve(bundle_dir, index, tmp_path) as srv:
        ok = httpx.post(srv.url + "/v1/items", json={"items": [{"id": "t-ok", "text": "sky"}]})
        assert ok.status_code == 201, ok.text
        db = index / "text" / "index.db"
        shutil.copy(db, tmp_path / "db-copy")
        os.replace(tmp_path / "db-copy", db)  # e.g. a restore from a backup under a running server
        refused = httpx.post(srv.url + "/v1/items", json={"items": [{"id": "t-lost", "text": "sea"}]})
        assert refused.status_code == 503 and "removed or replaced" in refused.json()["error"]["message"]
        still = httpx.post(srv.url + "/v1/search", files={"image": ("p.jpg", photo, "image/jpeg")}, data={"k": "3"})
        assert still.status_code == 200, still.text
    assert "Traceback" not in srv.log()
    reopened = dr.open_index(index / "text")
    assert "t-lost" not in reopened  # never acknowledged
    assert np.isfinite(reopened.search(model.encode_texts(["sky"]), k=1)[0][0].score)
