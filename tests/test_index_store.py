"""The SQLite index store: all-or-nothing changes, replay, errors that name the index, real concurrent
writer processes (``HnswIndex`` over the store) and kill -9 during adds (real SQLite, real processes)."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dagnn_runtime.errors import IndexFileError, InputError
from dagnn_runtime.indexes import checkpoint
from dagnn_runtime.indexes.hnsw import HnswIndex
from dagnn_runtime.indexes.store import DB_FILE, Store

sys.path.insert(0, str(Path(__file__).parent))
from index_writer import META, vector_of  # noqa: E402

WRITER = Path(__file__).parent / "index_writer.py"


def items(ids):
    return list(ids), np.stack([vector_of(i) for i in ids]), [json.dumps({"n": i}) for i in ids]


def contents(store):
    """id -> (metadata, vector) of everything the store holds, read through replay."""
    got = {}

    def on_items(seqs, ids, records, vectors):
        got.update((i, (json.loads(r), v.copy())) for i, r, v in zip(ids, records, vectors))
    store.replay((0, 0), on_items, lambda removed: None)
    return got


def run_writer(folder, *args, **popen):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, str(WRITER), str(folder), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_add_remove_and_replay_from_marks(tmp_path):
    store = Store.create(tmp_path / "ix", META)
    store.add(*items(["a", "b", "c"]))
    assert store.marks() == (3, 0) and store.count() == 3
    store.remove(["b"])
    store.add(*items(["d"]))
    assert store.marks() == (4, 1)
    got = contents(store)
    assert sorted(got) == ["a", "c", "d"] and got["d"][0] == {"n": "d"}
    np.testing.assert_array_equal(got["a"][1], vector_of("a"))
    # replay from (3, 0): the new item d, and the removal of b (seq 2 <= 3, so a graph at (3, 0) holds it)
    seen, removed = [], []
    marks = store.replay((3, 0), lambda s, i, r, v: seen.extend(zip(s.tolist(), i)), removed.extend)
    assert (seen, removed, marks) == ([(4, "d")], [2], (4, 1))
    store.add(*items(["b"]))  # a removed id can come back, under a new seq
    seen = []
    store.replay((4, 1), lambda s, i, r, v: seen.extend(zip(s.tolist(), i, r)), lambda seqs: None)
    assert seen == [(5, "b", json.dumps({"n": "b"}))]
    store.close()
    with pytest.raises(IndexFileError, match="closed"):
        store.count()


def test_refused_changes_change_nothing(tmp_path):
    store = Store.create(tmp_path / "ix", META)
    store.add(*items(["a", "b"]))
    with pytest.raises(InputError, match=r"id 'b' is already in the index .*ix \(1 duplicate ids\)"):
        store.add(*items(["c", "b"]))
    with pytest.raises(InputError, match="'x' appears twice"):
        store.add(*items(["x", "x"]))
    with pytest.raises(InputError, match="id 'zz' is not in the index"):
        store.remove(["a", "zz"])
    with pytest.raises(InputError, match="do not match 8-d items"):
        store.add(["e"], np.ones((1, 4), np.float32), ["{}"])
    assert sorted(contents(store)) == ["a", "b"] and store.marks() == (2, 0)


def test_disk_full_is_a_clear_error_and_changes_nothing(tmp_path):
    store = Store.create(tmp_path / "ix", META)
    store.add(*items(["a"]))
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite then answers SQLITE_FULL
    many = [f"big{i}" for i in range(2000)]
    with pytest.raises(IndexFileError, match=r"ix: disk full while adding items; nothing was changed"):
        store.add(*items(many))
    assert sorted(contents(store)) == ["a"]


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"not a database at all" * 300), "index.db is corrupt"),
    (lambda p: p.write_bytes(p.read_bytes()[:1024] + b"\xff" * 3072), "index.db is corrupt"),
])
def test_a_damaged_database_is_an_index_file_error(tmp_path, damage, message):
    store = Store.create(tmp_path / "ix", META)
    store.close()
    damage(tmp_path / "ix" / DB_FILE)
    with pytest.raises(IndexFileError, match=message):
        Store(tmp_path / "ix")


def test_another_format_version_or_a_foreign_database_is_refused(tmp_path):
    Store.create(tmp_path / "ix", META).close()
    with sqlite3.connect(tmp_path / "ix" / DB_FILE) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'format_version'")
    with pytest.raises(IndexFileError, match="format_version 3 is not supported"):
        Store(tmp_path / "ix")
    (tmp_path / "other").mkdir()
    with sqlite3.connect(tmp_path / "other" / DB_FILE) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    with pytest.raises(IndexFileError, match="not a dagnn index"):
        Store(tmp_path / "other")
    with pytest.raises(IndexFileError, match="no index.db"):
        Store(tmp_path / "nowhere")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(IndexFileError, match="refusing to create an index in .*photos: it holds other files"):
        Store.create(tmp_path / "photos", META)


def test_a_reader_sees_another_writers_items(tmp_path):
    writer, reader = Store.create(tmp_path / "ix", META), Store(tmp_path / "ix")
    assert reader.changed()  # the first check always replays
    marks = reader.replay((0, 0), lambda *a: None, lambda r: None)
    assert not reader.changed()
    writer.add(*items(["a", "b"]))
    writer.remove(["a"])
    assert reader.changed()
    seen = []
    assert reader.replay(marks, lambda s, i, r, v: seen.extend(i), seen.extend) == (2, 1)
    assert seen == ["b"] and not reader.changed()


def test_concurrent_writer_processes_and_a_remover_lose_nothing(tmp_path):
    folder = tmp_path / "ix"
    store = Store.create(folder, META)
    old = [f"old{i}" for i in range(100)]
    store.add(*items(old))
    procs = [run_writer(folder, "add", f"w{w}-", "500", "5") for w in range(4)]
    procs.append(run_writer(folder, "remove", *old))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, [err for _, err in outs]
    expected = {f"w{w}-{i}" for w in range(4) for i in range(500)}
    got = contents(store)
    assert set(got) == expected
    assert all(np.allclose(got[i][1], vector_of(i), atol=1e-6) for i in expected)
    assert store.marks() == (2100, 100)


def test_kill_9_during_adds_keeps_every_acknowledged_item(tmp_path):
    folder = tmp_path / "ix"
    rng = random.Random(9)
    acknowledged = set()
    for round_ in range(10):
        proc = run_writer(folder, "add", f"r{round_}-", "100000", str(rng.choice([1, 7, 50])))
        first = proc.stdout.readline()  # started (however slow the machine): kill at a random point after
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        acknowledged.update(line for line in (first + out).splitlines() if line)
    index = HnswIndex.load(folder)  # what a user does next; it also removes what the kills left behind
    got = contents(index._store)
    assert acknowledged and acknowledged <= set(got) and set(index.ids) == set(got)
    # only whole batches: anything beyond the acknowledged ids is a batch committed just before the kill
    assert all(np.allclose(got[i][1], vector_of(i), atol=1e-6) for i in got)
    sample = sorted(acknowledged)[:20]
    hits = index.search(np.stack([vector_of(i) for i in sample]), k=1, exact=True)
    assert [row[0].id for row in hits] == sample
    assert index._store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    leftovers = [p.name for p in folder.iterdir()
                 if p.name not in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", checkpoint.registered(index._store)["file"])]
    assert leftovers == []
