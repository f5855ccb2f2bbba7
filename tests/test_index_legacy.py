"""Version-1 index folders are converted once into the store, keeping every item and its vector."""
import hashlib
import json
import logging
import sys
from pathlib import Path

import hnswlib
import numpy as np
import pytest

from dagnn_runtime.errors import IndexFileError
from dagnn_runtime.indexes import legacy
from dagnn_runtime.indexes.store import DB_FILE, Store

sys.path.insert(0, str(Path(__file__).parent))
from index_writer import vector_of  # noqa: E402
from test_index_store import contents  # noqa: E402


def write_v1(folder: Path, ids, removed=()):
    """A version-1 folder as the version-1 writer left it: graph.hnsw + index.json with its SHA-256."""
    folder.mkdir(parents=True)
    graph = hnswlib.Index(space="ip", dim=8)
    graph.init_index(max_elements=len(ids), M=16, ef_construction=200)
    graph.add_items(np.stack([vector_of(i) for i in ids]), np.arange(len(ids)))
    items = [None if i in removed else [i, {"path": f"img/{i}.jpg"}] for i in ids]
    for label, i in enumerate(ids):
        if i in removed:
            graph.mark_deleted(label)
    graph.save_index(str(folder / "graph.hnsw"))
    meta = {"format": "dagnn-index", "format_version": 1, "dim": 8, "space": "cosine", "modality": "image",
            "embedding_space": "s" * 64, "M": 16, "ef_construction": 200, "ef": 128,
            "count": len(ids) - len(removed),
            "graph": {"file": "graph.hnsw",
                      "sha256": hashlib.sha256((folder / "graph.hnsw").read_bytes()).hexdigest()},
            "items": items}
    (folder / "index.json").write_text(json.dumps(meta))


def test_a_version_1_folder_is_converted_once_with_its_items(tmp_path, caplog):
    folder = tmp_path / "image"
    ids = [f"p{i}" for i in range(30)]
    write_v1(folder, ids, removed={"p3", "p7"})
    (tmp_path / ".image.tmp-k1ll3d").mkdir()  # what a killed version-1 save left beside it
    (tmp_path / ".image.tmp-k1ll3d" / "graph.hnsw").write_bytes(b"partial")
    with caplog.at_level(logging.INFO):
        assert legacy.convert(folder)
    assert "converted a version-1 index (28 items)" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image"]
    assert sorted(p.name for p in folder.iterdir()) == [DB_FILE]
    store = Store(folder)
    assert store.meta["modality"] == "image" and store.meta["M"] == 16 and store.dim == 8
    got = contents(store)
    assert sorted(got) == sorted(set(ids) - {"p3", "p7"})
    assert got["p5"][0] == {"path": "img/p5.jpg"}
    np.testing.assert_allclose(got["p5"][1], vector_of("p5"), atol=1e-6)
    assert not legacy.convert(folder)  # nothing left to do


def test_old_files_left_by_a_crash_after_the_conversion_are_removed(tmp_path):
    folder = tmp_path / "ix"
    write_v1(folder, ["a", "b"])
    old = {n: (folder / n).read_bytes() for n in ("index.json", "graph.hnsw")}
    legacy.convert(folder)
    for name, data in old.items():  # as if killed between linking index.db and deleting these
        (folder / name).write_bytes(data)
    assert not legacy.convert(folder)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(DB_FILE + "-")) == [DB_FILE]
    assert sorted(contents(Store(folder))) == ["a", "b"]


def test_a_corrupt_version_1_graph_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "ix"
    write_v1(folder, ["a", "b"])
    (folder / "graph.hnsw").write_bytes((folder / "graph.hnsw").read_bytes()[:-10])
    with pytest.raises(IndexFileError, match="graph.hnsw does not match the SHA-256"):
        legacy.convert(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["graph.hnsw", "index.json"]


@pytest.mark.parametrize("text, message", [
    ('"just a string"', r"index\.json: expected a JSON object, found str"),
    ("[1, 2]", r"index\.json: expected a JSON object, found list"),
    ("{broken", r"index\.json: not valid JSON \(line 1"),
    ("[" * 5000 + "]" * 5000, r"index\.json: JSON nested 5000 levels deep, more than the limit of 64"),
    ('{"a": 1, "a": 2}', r"index\.json: not valid JSON \(duplicate key 'a'\)"),
    (None, r"index\.json 'items': expected a JSON array, found str"),
    ("graph", r"graph\.hnsw does not match the SHA-256"),
    ("item", r"index\.json 'items': expected \[id, metadata object\] or null per item"),
])
def test_a_corrupt_version_1_index_json_is_one_clear_error_and_left_as_it_was(tmp_path, text, message):
    """Before: "'str' object has no attribute 'get'" and other parser tracebacks."""
    import dagnn_runtime as dr

    folder = tmp_path / "ix"
    write_v1(folder, ["a", "b"])
    meta = json.loads((folder / "index.json").read_text())
    if text is None:
        text = json.dumps(dict(meta, items="ab"))
    elif text == "graph":
        text = json.dumps(dict(meta, graph="graph.hnsw"))
    elif text == "item":
        text = json.dumps(dict(meta, items=[["a", "not an object"], ["b", {}]]))
    (folder / "index.json").write_text(text)
    for attempt in (lambda: legacy.convert(folder), lambda: dr.open_index(folder)):
        with pytest.raises(IndexFileError, match=message) as err:
            attempt()
        assert str(folder) in str(err.value) and len(str(err.value)) < 300
    assert sorted(p.name for p in folder.iterdir()) == ["graph.hnsw", "index.json"]


def test_a_version_1_folder_left_aside_by_a_killed_save_is_restored_and_converted(tmp_path):
    """The version-1 writer replaced the whole folder with two renames; killed between them, the index was
    only at .NAME.old-HOST-PID-*. Opening the index puts it back (atomic.recover), then converts it."""
    import subprocess

    import dagnn_runtime as dr
    from dagnn_runtime import atomic

    write_v1(tmp_path / "ix", ["a", "b"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / "ix").rename(tmp_path / f".ix.old-{atomic._HOST}-{dead}-abcd1234")
    assert dr.locate_index(tmp_path / "ix") == tmp_path / "ix"
    index = dr.open_index(tmp_path / "ix")
    assert sorted(index.ids) == ["a", "b"] and index.converted
    index.close()
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]
