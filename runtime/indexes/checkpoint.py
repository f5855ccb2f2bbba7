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

import logging
import os
import tempfile
import uuid
from pathlib import Path

import hnswlib

from ..digests import file_sha256
from ..errors import IndexFileError
from .store import Store
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
            registered, old = store.register_checkpoint(record)
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
    record = store.checkpoint()
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
            if store.forget_checkpoint(record):
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
        current = (store.checkpoint() or {}).get("file")
        for path in store.folder.iterdir():
            name = path.name
            if (name.startswith(TMP_PREFIXES) or _is_graph(name) and name != current) and path.is_file():
                path.unlink(missing_ok=True)
                deleted.append(name)
    if deleted:
        log.info("index %s: removed %d leftover file(s) of interrupted writers", store.folder, len(deleted))
    return deleted
