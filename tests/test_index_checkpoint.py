"""Graph checkpoints: registered only when complete, checked on load, damaged ones logged and dropped."""
import logging

import hnswlib
import numpy as np

from dagnn_runtime.indexes import checkpoint
from dagnn_runtime.indexes.store import Store, folder_lock
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from index_writer import DIM, META, SPACE, vector_of  # noqa: E402


def graph_of(ids):
    g = hnswlib.Index(space="ip", dim=META["dim"])
    g.init_index(max_elements=max(len(ids), 1), M=8, ef_construction=50)
    g.add_items(np.stack([vector_of(i) for i in ids]), np.arange(1, len(ids) + 1))
    return g


def test_write_then_load_and_an_older_graph_never_replaces_a_newer_one(tmp_path):
    store = Store.create(tmp_path / "ix", META)
    assert checkpoint.load(store) is None
    assert checkpoint.write(graph_of(["a", "b", "c"]), store, (3, 0))
    first = checkpoint.registered(store)["file"]
    assert first.startswith("graph-3-0-")
    assert not checkpoint.write(graph_of(["a", "b"]), store, (2, 0))  # older: dropped, file deleted
    assert checkpoint.write(graph_of(["a", "b", "c", "d"]), store, (4, 1))
    graph, marks = checkpoint.load(store)
    assert marks == (4, 1) and graph.get_current_count() == 4
    np.testing.assert_allclose(graph.get_items([4])[0], vector_of("d"), atol=1e-6)
    assert sorted(p.name for p in store.folder.iterdir() if p.name.startswith("graph")) == \
        [checkpoint.registered(store)["file"]]


def test_a_damaged_or_missing_checkpoint_is_logged_and_dropped(tmp_path, caplog):
    store = Store.create(tmp_path / "ix", META)
    checkpoint.write(graph_of(["a", "b"]), store, (2, 0))
    path = store.folder / checkpoint.registered(store)["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert checkpoint.load(store) is None
    assert "does not match its SHA-256" in caplog.text and "rebuilding the graph from index.db" in caplog.text
    assert checkpoint.registered(store) is None
    checkpoint.write(graph_of(["a", "b"]), store, (2, 0))
    (store.folder / checkpoint.registered(store)["file"]).unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert checkpoint.load(store) is None
    assert "is missing" in caplog.text


def test_leftovers_are_removed_only_when_nobody_holds_the_folder_lock(tmp_path):
    store = Store.create(tmp_path / "ix", META)
    checkpoint.write(graph_of(["a"]), store, (1, 0))
    current = checkpoint.registered(store)["file"]
    for name in (".graph.tmp-x1", ".index.db.tmp-y2", ".index.db.tmp-y2-wal", "graph-0-0-dead.hnsw"):
        (store.folder / name).write_bytes(b"partial")
    (store.folder / "notes.txt").write_text("kept")
    with folder_lock(store.folder):  # a checkpoint being written elsewhere: nothing is touched
        assert checkpoint.remove_leftovers(store) == []
    assert sorted(checkpoint.remove_leftovers(store)) == [".graph.tmp-x1", ".index.db.tmp-y2",
                                                           ".index.db.tmp-y2-wal", "graph-0-0-dead.hnsw"]
    assert sorted(p.name for p in store.folder.iterdir()) == [current, "index.db", "index.db-shm",
                                                              "index.db-wal", "notes.txt"]


def test_a_closing_writer_leaves_little_to_replay(tmp_path):
    """While writing, a checkpoint waits for 10 % of the items to change; on close, 1 % (at least
    MIN_CHANGES) is enough, so the next process to open the index does not rebuild much of its graph."""
    from dagnn_runtime.indexes.hnsw import HnswIndex

    def add(index, start, stop):
        ids = [f"i{n}" for n in range(start, stop)]
        index.add(np.stack([vector_of(i) for i in ids]), ids)

    assert checkpoint.due(40, 400) and not checkpoint.due(39, 400)
    assert not checkpoint.due(checkpoint.MIN_CHANGES - 1, 10, closing=True)
    assert checkpoint.due(checkpoint.MIN_CHANGES, 400, closing=True)
    assert checkpoint.due(100, 10_000, closing=True) and not checkpoint.due(99, 10_000, closing=True)
    index = HnswIndex(DIM, SPACE, modality="image", M=8, ef_construction=40, location=tmp_path / "ix")
    add(index, 0, 400)                                      # one add of 400 items: due at once
    add(index, 400, 400 + checkpoint.MIN_CHANGES)           # fewer than 10 % more: not due yet
    assert index.info()["pending_checkpoint"] == checkpoint.MIN_CHANGES
    index.close()
    again = HnswIndex.load(tmp_path / "ix")
    assert again.info()["pending_checkpoint"] == 0 and len(again) == 400 + checkpoint.MIN_CHANGES
    add(again, 1000, 1000 + checkpoint.MIN_CHANGES - 1)     # fewer than MIN_CHANGES: left to replay
    again.close()
    assert HnswIndex.load(tmp_path / "ix").info()["pending_checkpoint"] == checkpoint.MIN_CHANGES - 1


def test_a_reader_of_a_read_only_index_closes_without_a_warning(tmp_path, caplog, monkeypatch):
    """Where the folder is not writable, closing writes no checkpoint and warns of nothing: the next
    opener replays. (Root may write anywhere, so the test takes the permission away itself.)"""
    from dagnn_runtime.indexes.hnsw import HnswIndex

    ids = [f"i{n}" for n in range(435)]
    index = HnswIndex(DIM, SPACE, modality="image", M=8, ef_construction=40, location=tmp_path / "ix")
    index.add(np.stack([vector_of(i) for i in ids[:400]]), ids[:400])
    index.add(np.stack([vector_of(i) for i in ids[400:]]), ids[400:])  # 35 pending: due only when closing
    registered = checkpoint.registered(Store(tmp_path / "ix"))
    assert index.info()["pending_checkpoint"] == 35
    monkeypatch.setattr(checkpoint.os, "access", lambda path, mode: False)
    with caplog.at_level(logging.INFO, logger="dagnn_runtime.indexes"):
        index.close()
    assert checkpoint.registered(Store(tmp_path / "ix")) == registered and len(HnswIndex.load(tmp_path / "ix")) == 435
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("not writable" in r.getMessage() for r in caplog.records)
