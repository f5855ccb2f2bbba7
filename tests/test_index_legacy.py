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
