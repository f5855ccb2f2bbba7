"""One item record however an item was added, indexes that travel with their photos, ids that never
collide silently, and older indexes upgraded in place: against a real ``dagnn serve`` on 127.0.0.1."""
from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the [serve] extra")
pytest.importorskip("pyarrow", reason="`dagnn embed` needs the [ray] extra")
httpx = pytest.importorskip("httpx")

import dagnn_runtime as dr  # noqa: E402
from dagnn_runtime.items import item_record  # noqa: E402
from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401  (fixtures)
from dagnn_cli.main import app  # noqa: E402
from serve_helpers import serve  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

runner = CliRunner()


def dagnn(*args, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def copy_photos(photos: list, folder):
    folder.mkdir(parents=True)
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    return folder


def label_search(client, label: str) -> dict:
    """Id -> metadata of every image item carrying ``label``, by a label-filtered search over HTTP."""
    res = client.post("/v1/search", json={"text": "sky", "target": "image", "k": 100, "labels": [label]})
    assert res.status_code == 200, res.text
    return {hit["id"]: hit["metadata"] for hit in res.json()["results"]}


def test_items_added_every_way_are_found_by_the_labels_filter(tmp_path, bundle_dir, data_dir, model):
    photos = sorted((data_dir / "images").glob("*.jpg"))
    index = tmp_path / "index"
    # 1. the command line
    dagnn("index", "build", "--bundle", bundle_dir, "--images", copy_photos(photos[0:3], tmp_path / "cli"),
          "--index", index / "image", "--quiet")
    # 2. the Python API (the README's way)
    image_index = dr.open_index(index / "image", model=model)
    dr.ingest(model, dr.source_from_images(copy_photos(photos[3:6], tmp_path / "py")), image_index)
    image_index.close()
    # 3. embeddings computed apart (`dagnn embed`), loaded without encoding
    dagnn("embed", "--bundle", bundle_dir, "--images", copy_photos(photos[6:9], tmp_path / "emb"),
          "--out", tmp_path / "shards")
    dagnn("index", "build", "--bundle", bundle_dir, "--from-embeddings", tmp_path / "shards", "--index", index)
    expected = {p.name: p.read_bytes() for p in photos[:9]}
    with serve(bundle_dir, index, tmp_path) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        # 4. the HTTP API
        res = client.post("/v1/items", files={"image": ("x.jpg", photos[9].read_bytes(), "image/jpeg")},
                          data={"id": "over-http"})
        assert res.status_code == 201, res.text
        expected["over-http"] = photos[9].read_bytes()
        for item_id, data in expected.items():
            tagged = client.post("/v1/tag", files={"image": ("p.jpg", data, "image/jpeg")}).json()
            assert tagged["labels"], f"{item_id}: the factory bundle predicts no label for it"
            for label in tagged["labels"]:
                found = label_search(client, label)
                assert item_id in found, f"{item_id} ({label}) not found; found {sorted(found)}"
                assert label in found[item_id]["predicted_labels"]
    assert "Traceback" not in srv.log(), srv.log()


def test_an_index_moved_with_its_photos_serves_every_image_from_anywhere(tmp_path, bundle_dir, data_dir,
                                                                         monkeypatch):
    photos = sorted((data_dir / "images").glob("*.jpg"))[:4]
    project = tmp_path / "project"
    copy_photos(photos, project / "photos")
    monkeypatch.chdir(project)  # relative paths, as a user types them
    dagnn("index", "build", "--bundle", bundle_dir, "--images", "photos", "--index", "index/image", "--quiet")
    with serve(bundle_dir, project / "index", tmp_path) as srv:
        added = httpx.post(srv.url + "/v1/items", data={"id": "uploaded"},
                           files={"image": ("u.jpg", photos[0].read_bytes(), "image/jpeg")})
        assert added.status_code == 201, added.text
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(project), moved)
    (tmp_path / "another").mkdir()
    monkeypatch.chdir(tmp_path / "another")  # serve from a folder that holds no photos at all
    with serve(bundle_dir, moved / "index", tmp_path) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        ids = {p.name: p.read_bytes() for p in photos} | {"uploaded": photos[0].read_bytes()}
        for item_id, data in ids.items():
            got = client.get(f"/v1/items/{item_id}/image")
            assert got.status_code == 200 and got.content == data, (item_id, got.status_code, got.text[:200])
        hits = client.post("/v1/search", json={"text": "sky", "target": "image", "k": 10}).json()["results"]
        assert {h["metadata"]["path"] for h in hits if h["id"] != "uploaded"} == {
            str(moved / "photos" / p.name) for p in photos}
    info = json.loads(dagnn("index", "info", "--index", moved / "index" / "image", "--json").stdout)
    assert info[0]["roots"] == [str(moved / "photos"), str(moved / "index" / "uploads")]


def test_two_files_under_one_id_are_refused_naming_both(tmp_path, bundle_dir, data_dir):
    photo, other = sorted((data_dir / "images").glob("*.jpg"))[:2]
    for folder, source in (("a", photo), ("b", other)):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "photo.jpg")
    both = dagnn("index", "build", "--bundle", bundle_dir, "--images", tmp_path / "a", "--images", tmp_path / "b",
                 "--index", tmp_path / "ix", code=1)
    assert "have the same id" in both.stderr and "a/photo.jpg" in both.stderr and "b/photo.jpg" in both.stderr
    dagnn("index", "build", "--bundle", bundle_dir, "--images", tmp_path / "a", "--index", tmp_path / "ix", "--quiet")
    later = dagnn("index", "add", "--bundle", bundle_dir, "--images", tmp_path / "b", "--index", tmp_path / "ix",
                  code=1)
    assert "(indexed) have the same id" in later.stderr and "a/photo.jpg" in later.stderr
    again = json.loads(dagnn("index", "add", "--bundle", bundle_dir, "--images", tmp_path / "a", "--index",
                             tmp_path / "ix", "--json", "--quiet").stdout)
    assert (again[0]["added"], again[0]["already_present"]) == (0, 1)  # the same file again: resumed


def _make_old(folder, cwd_relative: dict) -> None:
    """Turn ``folder``'s index into one an older dagnn wrote: no predicted labels, paths relative to the
    folder it was built from, no ``paths`` meta."""
    with sqlite3.connect(folder / "index.db") as conn:
        for item_id, path in cwd_relative.items():
            conn.execute("UPDATE items SET metadata = json_set(json_remove(metadata, '$.predicted_labels'), "
                         "'$.path', ?), crc = NULL WHERE id = ?", (path, item_id))  # no row checksums then
        conn.execute("DELETE FROM meta WHERE key = 'paths'")
    for leftover in folder.glob("graph-*.hnsw"):  # the graph checkpoint mirrors the old records
        leftover.unlink()


def test_an_older_index_is_upgraded_in_place_and_resumably(tmp_path, bundle_dir, data_dir, model, monkeypatch):
    photos = sorted((data_dir / "images").glob("*.jpg"))[:5]
    copy_photos(photos, tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    dagnn("index", "build", "--bundle", bundle_dir, "--images", "photos", "--index", "ix", "--quiet")
    _make_old(tmp_path / "ix", {p.name: f"photos/{p.name}" for p in photos})
    old = dr.open_index(tmp_path / "ix")
    assert all("predicted_labels" not in old.metadata(p.name) for p in photos)
    label = model.labels_above_threshold(model.score_labels(model.encode_images(photos[:1])))[0][0][0]
    assert old.search(model.encode_images(photos[:1]), k=5, labels=[label]) == [[]]  # the filter misses them

    calls = []

    def fails_on_the_second_batch(ids, vectors, metadata):
        calls.append(ids)
        if len(calls) == 2:
            raise OSError("interrupted")
        predicted = model.labels_above_threshold(model.score_labels(vectors))
        return [item_record(m, [name for name, _ in p]) for m, p in zip(metadata, predicted)]

    with pytest.raises(OSError):
        old.rewrite(fails_on_the_second_batch, batch=2)
    old.close()
    done = dr.open_index(tmp_path / "ix")
    assert sum("predicted_labels" in done.metadata(p.name) for p in photos) == 2  # the first batch was kept
    done.close()
    assert "5 of 5 items upgraded" in dagnn("index", "upgrade", "--bundle", bundle_dir, "--index", "ix").stdout
    assert "0 of 5 items upgraded" in dagnn("index", "upgrade", "--bundle", bundle_dir, "--index", "ix").stdout
    monkeypatch.chdir(data_dir)  # paths no longer depend on where one stands
    upgraded = dr.open_index(tmp_path / "ix")
    hits = upgraded.search(model.encode_images(photos[:1]), k=5, labels=[label])[0]
    assert photos[0].name in [h.id for h in hits]
    assert all(upgraded.metadata(p.name)["path"] == str(tmp_path / "photos" / p.name) for p in photos)
    np.testing.assert_allclose(upgraded.search(model.encode_images(photos[:1]), k=1)[0][0].score, 1.0, atol=1e-5)
