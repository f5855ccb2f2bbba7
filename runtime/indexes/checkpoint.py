"""Graph checkpoints: the HNSW graph saved now and then, so that opening an index need not rebuild it.

A checkpoint is never needed for correctness: the store (SQLite) holds every item. The file
``graph-<item seq>-<removal seq>-<random>.hnsw`` covers the store's rows up to those seqs; once it is
complete and on disk, its SHA-256 and seqs are registered in the store in one transaction, and the file it
replaces is deleted. Opening loads the registered file when it is intact, then replays newer rows; a
missing or damaged checkpoint is logged and the graph rebuilt from the store.

One process at a time writes checkpoints (the folder lock; others skip theirs), and whoever holds that lock
may delete what killed processes left behind: temporary files and unregistered graphs.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from pathlib import Path

import hnswlib

from .. import jsonio
from ..digests import file_sha256
from ..errors import IndexFileError
from .store import KEEP, Store
from .store_file import DB_FILE, folder_lock, fsync_dir

log = logging.getLogger(__name__)

TMP_PREFIXES = (".graph.tmp-", f".{DB_FILE}.tmp-")
# When a checkpoint is due. While an index is being written: after max(MIN_CHANGES, FRACTION x items)
# changes since the last one, so that the bytes written for checkpoints stay proportional to the changes
# (amortised: about 1 / FRACTION graph bytes per change, ~42 kB at 1024-d). When a writer closes the index:
# after max(MIN_CHANGES, CLOSING_FRACTION x items), because every process that opens it next replays what a
# checkpoint does not cover, and replaying an item is a graph insertion (~0.3 ms at 1024-d), some 75 times
# the cost of loading it from a checkpoint: opening then spends at most about as long replaying as loading.
MIN_CHANGES, FRACTION, CLOSING_FRACTION = 32, 0.1, 0.01


def due(pending: int, items: int, min_changes: int = MIN_CHANGES, closing: bool = False) -> bool:
    """Whether ``pending`` changes since the last checkpoint of an index of ``items`` call for a new one;
    ``closing``: the writer is closing the index."""
    return pending >= max(min_changes, (CLOSING_FRACTION if closing else FRACTION) * items)


def registered(store: Store) -> dict | None:
    """The registered graph checkpoint: {file, sha256, marks: [item seq, removal seq], count, dim}, or None."""
    return _record(store, store.meta_text("checkpoint"))


def _record(store: Store, text) -> dict | None:
    """A checkpoint record as ``write`` makes it, or None (logged) when there is none or it is damaged: the
    graph is then rebuilt from the rows, which is slower but loses nothing."""
    if text is None:
        return None
    try:
        record = jsonio.expect(jsonio.loads(text, "checkpoint record", error=IndexFileError), dict,
                               "checkpoint record", error=IndexFileError)
        marks = record["marks"]
        if not (isinstance(record["file"], str) and isinstance(record["count"], int)
                and isinstance(marks, list) and len(marks) == 2 and all(isinstance(m, int) for m in marks)):
            raise IndexFileError("checkpoint record: fields of the wrong type")
    except (IndexFileError, KeyError, TypeError) as exc:
        log.warning("index %s: ignoring a damaged graph checkpoint record (%s)", store.folder, exc)
        return None
    return record


def _register(store: Store, record: dict) -> tuple:
    """Make ``record`` the checkpoint unless the registered one covers as much; returns (registered?, the
    record it replaced or None). Any two snapshots are ordered, so marks compare component-wise."""
    def decide(text):
        old = _record(store, text)
        if old is not None and all(o >= n for o, n in zip(old["marks"], record["marks"])):
            return KEEP, (False, old)
        return json.dumps(record), (True, old)

    return store.update_meta("checkpoint", decide)


def _forget(store: Store, record: dict) -> bool:
    """Unregister ``record`` (found unusable) unless another process registered a newer one meanwhile."""
    return store.update_meta("checkpoint", lambda text: (None, True) if _record(store, text) == record
                             else (KEEP, False))


def pending(marks: tuple, written: tuple) -> int:
    """Changes a graph at ``marks`` holds beyond the checkpoint written at ``written``."""
    return sum(m - w for m, w in zip(marks, written))


def write_if_due(graph, store: Store | None, marks: tuple, written: tuple, min_changes: int = MIN_CHANGES, *,
                 force: bool = False, closing: bool = False) -> tuple:
    """Write ``graph`` (a ``hnsw_graph.Graph``) at ``marks`` when a checkpoint is ``due`` (or ``force``d);
    returns the marks the checkpoint on disk covers. A failure is only logged: the store has it all."""
    changes = pending(marks, written)
    if store is None or not changes or not (force or due(changes, len(graph.labels), min_changes, closing)):
        return written
    try:
        if write(graph.hnsw, store, marks):
            return marks
    except (OSError, IndexFileError) as exc:
        log.warning("index %s: graph checkpoint not written (%s)", store.folder, exc)
    return written


def _is_graph(name: str) -> bool:
    return name.startswith("graph-") and name.endswith(".hnsw")


def write(graph: hnswlib.Index, store: Store, marks: tuple) -> bool:
    """Save ``graph`` (covering the store up to ``marks``; the caller keeps it unchanged meanwhile) and
    register it. Returns False when skipped: another process is writing one, or a newer one is registered."""
    folder = store.folder
    if not os.access(folder, os.W_OK):  # a read-only index: its readers can only replay, and need no warning
        log.info("index %s: the folder is not writable; no graph checkpoint", folder)
        return False
    with folder_lock(folder, blocking=False) as locked:
        if not locked:
            log.info("index %s: another process is writing a graph checkpoint; skipping this one", folder)
            return False
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIXES[0])
        os.close(fd)
        tmp = Path(tmp_name)
        name = f"graph-{marks[0]}-{marks[1]}-{uuid.uuid4().hex[:8]}.hnsw"
        try:
            graph.save_index(str(tmp))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            record = {"file": name, "sha256": file_sha256(tmp), "marks": [int(m) for m in marks],
                      "count": graph.get_current_count(), "dim": graph.dim}
            os.chmod(tmp, 0o644)
            os.replace(tmp, folder / name)
            fsync_dir(folder)
            registered, old = _register(store, record)
        except BaseException:
            tmp.unlink(missing_ok=True)
            (folder / name).unlink(missing_ok=True)
            raise
        if not registered:  # a process that saw more registered its graph meanwhile
            (folder / name).unlink(missing_ok=True)
        elif old is not None and old["file"] != name:
            (folder / old["file"]).unlink(missing_ok=True)
        if registered:
            log.info("index %s: graph checkpoint %s written (%d items)", folder, name, record["count"])
        return registered


def load(store: Store) -> tuple | None:
    """(graph, marks) of the registered checkpoint, or None (logged) when there is none usable."""
    record = registered(store)
    if record is None:
        return None
    path = store.folder / record["file"]
    why = None
    if not _is_graph(record["file"]) or Path(record["file"]).name != record["file"]:
        why = "has an invalid name"
    elif not path.is_file():
        why = "is missing"
    elif file_sha256(path) != record.get("sha256"):
        why = "does not match its SHA-256 (changed or corrupt)"
    elif record.get("dim") != store.dim:
        why = f"holds {record.get('dim')}-d vectors, the index {store.dim}-d"
    if why is None:
        graph = hnswlib.Index(space="ip", dim=store.dim)
        try:
            graph.load_index(str(path), max_elements=max(int(record["count"]), 1))
        except (RuntimeError, ValueError, MemoryError) as exc:
            why = f"cannot be read ({exc})"
        else:
            if graph.get_current_count() != record["count"]:
                why = f"holds {graph.get_current_count()} items, its record says {record['count']}"
    if why is not None:
        log.warning("index %s: graph checkpoint %s %s; rebuilding the graph from %s",
                    store.folder, record["file"], why, DB_FILE)
        try:
            if _forget(store, record):
                path.unlink(missing_ok=True)
        except (IndexFileError, OSError) as exc:  # e.g. a read-only index: the next writer replaces it
            log.info("%s", exc)
        return None
    return graph, tuple(record["marks"])


def remove_leftovers(store: Store) -> list:
    """Delete temporary files and unregistered graphs of killed processes, when no process is writing a
    checkpoint or creating the store right now. Returns the names deleted."""
    deleted = []
    with folder_lock(store.folder, blocking=False) as locked:
        if not locked:
            return deleted
        current = (registered(store) or {}).get("file")
        for path in store.folder.iterdir():
            name = path.name
            if (name.startswith(TMP_PREFIXES) or _is_graph(name) and name != current) and path.is_file():
                path.unlink(missing_ok=True)
                deleted.append(name)
    if deleted:
        log.info("index %s: removed %d leftover file(s) of interrupted writers", store.folder, len(deleted))
    return deleted
