"""The index store: an index's items, metadata and vectors in one SQLite database, its source of truth.

Why a database: several processes (CLI runs, server workers) add and remove items of one index. Each change
is one transaction (WAL journal, ``synchronous=FULL``, writers take the lock up front with ``BEGIN
IMMEDIATE`` and wait for each other), so an acknowledged change survives kill -9 and power loss, no writer
overwrites another's work, and a change writes bytes in proportion to its size, not to the index's. The
HNSW graph is only an accelerator derived from these rows and checkpointed now and then (``checkpoint.py``).

Tables of ``index.db``::

    meta      key -> JSON value: format, format_version, dim, modality, embedding_space, HNSW parameters,
              the bundle's digest when known, how photo paths are stored (``paths``), the photo roots,
              and the registered graph checkpoint
    items     seq (never reused; the graph's label), id (unique), metadata (JSON text),
              vector (float32 little-endian bytes, L2-normalised); removing an item deletes its row
    removals  seq (never reused) -> item_seq: the removals a graph checkpoint may not have seen yet
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import IndexFileError, InputError
from .store_file import (DB_FILE, FileWatch, add_checksum_column, checked_meta, create_db, folder_lock,
                         row_checksum, sqlite_errors)

log = logging.getLogger(__name__)

CHUNK = 500  # ids per SQL statement (well under SQLite's bound-parameter limit)
KEEP = object()  # ``update_meta``: leave the value as it is


def _chunks(seq, size=CHUNK):
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


class Store:
    """One index's SQLite database. Safe to share between threads (one connection behind a lock)."""

    def __init__(self, folder, *, busy_timeout: float = 60.0):
        """Open the store in ``folder``; ``busy_timeout``: seconds a writer waits for another to finish."""
        self.folder = Path(folder)
        self.path = self.folder / DB_FILE
        self.busy_timeout = float(busy_timeout)
        if not self.path.is_file():
            raise IndexFileError(f"index {self.folder}: no {DB_FILE} (not an index folder?)")
        self._lock = threading.RLock()
        self._conn = None
        with self._guard("opening"):
            # mode=rw: never create an empty database by accident; autocommit, transactions are explicit
            self._conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=self.busy_timeout,
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk before add() returns
            if self._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._conn.execute("PRAGMA journal_mode=WAL")
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
            self._checked = "crc" in [r[1] for r in self._conn.execute("PRAGMA table_info(items)")]
        try:
            self.meta = checked_meta(self.folder, rows)
        except IndexFileError:
            self.close()
            raise
        self.dim = self.meta["dim"]
        self._watch = FileWatch(self.path)
        self.damaged: set = set()   # ids whose row failed its checksum when replayed (left out of the graph)
        self._seen_version = None
        self.created = False

    @classmethod
    def create(cls, folder, meta: dict, rows=(), last_seq: int = 0, **kwargs) -> "Store":
        """A new store with ``meta`` (needs ``dim`` and ``embedding_space``), seeded with ``rows`` (see
        ``store_file.create_db``), or the one already in ``folder``: when several processes create one at
        the same moment, exactly one wins and all get that one. ``created`` says which; callers check its meta."""
        folder = Path(folder)
        if not isinstance(meta.get("dim"), int) or meta["dim"] < 1 or not meta.get("embedding_space"):
            raise InputError("an index store needs a positive integer dim and an embedding_space")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexFileError(f"index {folder}: cannot create the folder ({exc})") from exc
        with folder_lock(folder):
            others = [p.name for p in folder.iterdir() if not p.name.startswith((".", DB_FILE))]
            if not (folder / DB_FILE).exists() and others:
                raise IndexFileError(f"refusing to create an index in {folder}: it holds other files "
                                     f"({others[0]!r:.80}, ...)")
            created = create_db(folder, meta, rows, last_seq)
        store = cls(folder, **kwargs)
        store.created = created
        return store

    # ---- plumbing ------------------------------------------------------------------------------------
    def _guard(self, doing: str):
        return sqlite_errors(self.folder, doing, self.busy_timeout)

    @contextmanager
    def _transaction(self, doing: str, write: bool = True):
        """One transaction; a writer takes the write lock first (no lock upgrade, so no deadlock)."""
        with self._lock, self._guard(doing):
            conn = self._conn
            if conn is None:
                raise IndexFileError(f"index {self.folder} is closed")
            if write:
                self._watch.check(self.folder)
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                if write and not self._checked:
                    add_checksum_column(conn)
                    self._checked = True
                yield conn
                conn.execute("COMMIT")
                if write:
                    self._watch.written()
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ---- changes -------------------------------------------------------------------------------------
    def add(self, ids: list, vectors: np.ndarray, records: list) -> None:
        """Commit items (ids: strings; vectors: ``(n, dim)`` L2-normalised; records: metadata JSON text).
        All or nothing: an id already in the store refuses the whole call."""
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or not len(ids) == len(records) == len(vectors):
            raise InputError(f"index {self.folder}: {len(ids)} ids, {len(records)} metadata records and "
                             f"vectors of shape {vectors.shape} do not match {self.dim}-d items")
        if len(set(ids)) != len(ids):
            seen = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise InputError(f"id {dup!r:.80} appears twice in the items to add")
        rows = [(i, r, v.tobytes(), row_checksum(i, r, v.tobytes())) for i, r, v in zip(ids, records, vectors)]
        try:
            with self._transaction("adding items") as conn:
                conn.executemany("INSERT INTO items (id, metadata, vector, crc) VALUES (?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError as exc:
            present = self.present(ids)
            if not present:
                raise IndexFileError(f"index {self.folder}: adding items failed ({exc})") from exc
            raise InputError(f"id {present[0]!r:.80} is already in the index {self.folder} "
                             f"({len(present)} duplicate ids); nothing was added") from exc

    def remove(self, ids: list) -> None:
        """Delete items and log their removal. All or nothing: an unknown id refuses the whole call."""
        ids = list(dict.fromkeys(ids))
        with self._transaction("removing items") as conn:
            found = {}
            for part in _chunks(ids):
                marks = ",".join("?" * len(part))
                found.update(conn.execute(f"SELECT id, seq FROM items WHERE id IN ({marks})", part))
            unknown = [i for i in ids if i not in found]
            if unknown:
                raise InputError(f"id {unknown[0]!r:.80} is not in the index {self.folder} "
                                 f"({len(unknown)} unknown ids); nothing was removed")
            seqs = [(found[i],) for i in ids]
            conn.executemany("DELETE FROM items WHERE seq = ?", seqs)
            conn.executemany("INSERT INTO removals (item_seq) VALUES (?)", seqs)

    def replace(self, ids: list, records: list) -> None:
        """Give items new metadata (JSON texts), all or nothing. Each is removed and added again under a new
        seq, so that every process's graph takes the change by replaying, as for any other change."""
        with self._transaction("replacing metadata") as conn:
            for part_ids, part_records in zip(_chunks(ids), _chunks(records)):
                marks = ",".join("?" * len(part_ids))
                found = dict((i, (q, v)) for q, i, v in conn.execute(
                    f"SELECT seq, id, vector FROM items WHERE id IN ({marks})", part_ids))
                unknown = [i for i in part_ids if i not in found]
                if unknown:
                    raise InputError(f"id {unknown[0]!r:.80} is not in the index {self.folder}; nothing was changed")
                conn.executemany("DELETE FROM items WHERE seq = ?", [(found[i][0],) for i in part_ids])
                conn.executemany("INSERT INTO removals (item_seq) VALUES (?)", [(found[i][0],) for i in part_ids])
                conn.executemany("INSERT INTO items (id, metadata, vector, crc) VALUES (?, ?, ?, ?)",
                                 [(i, r, found[i][1], row_checksum(i, r, found[i][1]))
                                  for i, r in zip(part_ids, part_records)])

    # ---- reading -------------------------------------------------------------------------------------
    def present(self, ids: list) -> list:
        """Those of ``ids`` that are in the store, in the given order."""
        found = set()
        with self._transaction("reading ids", write=False) as conn:
            for part in _chunks(list(ids)):
                marks = ",".join("?" * len(part))
                found.update(r[0] for r in conn.execute(f"SELECT id FROM items WHERE id IN ({marks})", part))
        return [i for i in ids if i in found]

    def count(self) -> int:
        with self._transaction("counting items", write=False) as conn:
            return conn.execute("SELECT count(*) FROM items").fetchone()[0]

    def marks(self) -> tuple:
        """(last item seq, last removal seq) ever assigned: what a complete graph covers."""
        with self._transaction("reading marks", write=False) as conn:
            return self._marks(conn)

    @staticmethod
    def _marks(conn) -> tuple:
        got = dict(conn.execute("SELECT name, seq FROM sqlite_sequence"))
        return got.get("items", 0), got.get("removals", 0)

    def changed(self) -> bool:
        """Whether another connection committed since the last call (``PRAGMA data_version``: cheap)."""
        with self._lock, self._guard("checking for changes"):
            if self._conn is None:
                raise IndexFileError(f"index {self.folder} is closed")
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            changed, self._seen_version = version != self._seen_version, version
            return changed

    def replay(self, after: tuple, on_items: Callable, on_removals: Callable, on_known: Callable | None = None,
               batch: int = 2048) -> tuple:
        """Feed what is newer than ``after`` = (item seq, removal seq), from one consistent snapshot:
        ``on_items(seqs, ids, records, vectors)`` per batch of added items still present, then
        ``on_removals(item_seqs)`` for removals of items at or below ``after[0]``. ``on_known(seqs, ids,
        records)`` first gets the items at or below ``after[0]`` still present (a graph checkpoint holds
        their vectors, not their ids). Returns the new marks."""
        after_item, after_removal = int(after[0]), int(after[1])
        with self._transaction("reading changes", write=False) as conn:
            marks = self._marks(conn)
            last = 0
            while on_known is not None:
                rows = conn.execute("SELECT seq, id, metadata FROM items WHERE seq > ? AND seq <= ? "
                                    "ORDER BY seq LIMIT ?", (last, after_item, batch)).fetchall()
                if not rows:
                    break
                on_known(np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows],
                         [r[2] for r in rows])
                last = rows[-1][0]
            last, crc = after_item, "crc" if self._checked else "NULL"
            while True:
                rows = conn.execute(f"SELECT seq, id, metadata, vector, {crc} FROM items WHERE seq > ? AND "
                                    "seq <= ? ORDER BY seq LIMIT ?", (last, marks[0], batch)).fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                rows = [r for r in rows if self._intact(r)]
                if rows:
                    vectors = np.frombuffer(b"".join(r[3] for r in rows), "<f4").reshape(len(rows), self.dim)
                    on_items(np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows],
                             [r[2] for r in rows], vectors)
            removed = [r[0] for r in conn.execute("SELECT item_seq FROM removals WHERE seq > ? AND seq <= ? "
                                                  "AND item_seq <= ?", (after_removal, marks[1], after_item))]
            if removed:
                on_removals(np.array(removed, dtype=np.int64))
        return marks

    def _intact(self, row) -> bool:
        """Whether a replayed row is as written (its vector's size, its checksum where it has one); a
        damaged one is logged once and left out of the graph, never served."""
        seq, item_id, record, vector, crc = row
        ok = (isinstance(vector, bytes) and len(vector) == 4 * self.dim and isinstance(item_id, str)
              and isinstance(record, str) and (crc is None or crc == row_checksum(item_id, record, vector)))
        if not ok and item_id not in self.damaged:
            self.damaged.add(item_id)
            log.error("index %s: item %r (seq %d) is damaged on disk (checksum or size); it is left out of "
                      "searches: remove it and add it again", self.folder, str(item_id)[:80], seq)
        return ok

    # ---- meta ----------------------------------------------------------------------------------------
    def meta_text(self, key: str) -> str | None:
        """A meta value as stored (JSON text), read now (another process may have changed it)."""
        with self._transaction(f"reading {key}", write=False) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def update_meta(self, key: str, decide: Callable):
        """In one write transaction, ``decide(current JSON text or None)`` -> (new text, or None to delete
        the key, or ``KEEP``; what to return): a compare-and-set for records such as the checkpoint's."""
        with self._transaction(f"updating {key}") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            new, result = decide(None if row is None else row[0])
            if new is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            elif new is not KEEP:
                conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, new))
        if new is None:
            self.meta.pop(key, None)
        elif new is not KEEP:
            self.meta[key] = json.loads(new)
        return result
