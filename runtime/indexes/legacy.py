"""Version-1 index folders (``index.json`` + ``graph.hnsw``, rewritten whole on every save), converted once
into the SQLite store.

The new database is built complete under a temporary name and linked into place; only then are the old
files deleted. A crash before the link leaves the old index as it was (the next open converts again); a
crash after it leaves old files that the next open deletes, since the database already holds their items.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import hnswlib
import numpy as np

from .. import jsonio
from ..digests import file_sha256
from ..errors import IndexFileError
from .store_file import DB_FILE, create_db, folder_lock, fsync_dir

log = logging.getLogger(__name__)

V1_META, V1_GRAPH = "index.json", "graph.hnsw"
PARAMS = ("M", "ef_construction", "ef")
BATCH = 10_000


def is_v1(folder) -> bool:
    return (Path(folder) / V1_META).is_file()


def _read(folder: Path):
    """(meta, labels, items) of a version-1 folder, checked as the version-1 reader did."""
    what = f"index {folder}: {V1_META}"
    meta = jsonio.expect(jsonio.load_file(folder / V1_META, what, error=IndexFileError), dict, what,
                         error=IndexFileError)
    try:
        if meta.get("format") != "dagnn-index" or meta.get("format_version") != 1:
            raise IndexFileError(f"index {folder}: {V1_META} is not a version-1 dagnn index "
                                 f"(format {meta.get('format')!r}, version {meta.get('format_version')!r})")
        dim, items = int(meta["dim"]), jsonio.expect(meta["items"], list, f"{what} 'items'", error=IndexFileError)
        if any(it is not None and (not isinstance(it, list) or len(it) != 2 or not isinstance(it[1], dict))
               for it in items):
            raise IndexFileError(f"{what} 'items': expected [id, metadata object] or null per item")
        live = [(label, str(it[0]), json.dumps(it[1], ensure_ascii=False))
                for label, it in enumerate(items) if it is not None]
        store_meta = {"dim": dim, "embedding_space": str(meta["embedding_space"]), "space": "cosine",
                      "modality": meta.get("modality"), **{p: int(meta[p]) for p in PARAMS}}
    except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
        raise IndexFileError(f"index {folder}: {V1_META} is malformed ({exc})") from exc
    if len({key for _, key, _ in live}) != len(live):
        raise IndexFileError(f"index {folder}: duplicate ids in {V1_META}")
    graph_path = folder / V1_GRAPH
    if not graph_path.is_file():
        raise IndexFileError(f"index {folder}: missing {V1_GRAPH}")
    graph_meta = meta.get("graph")
    if file_sha256(graph_path) != (graph_meta.get("sha256") if isinstance(graph_meta, dict) else None):
        raise IndexFileError(f"index {folder}: {V1_GRAPH} does not match the SHA-256 in {V1_META} "
                             "(changed or corrupt)")
    graph = hnswlib.Index(space="ip", dim=dim)
    try:
        graph.load_index(str(graph_path), max_elements=max(len(items), 1))
    except RuntimeError as exc:
        raise IndexFileError(f"index {folder}: cannot read {V1_GRAPH} ({exc})") from exc
    if graph.get_current_count() != len(items):
        raise IndexFileError(f"index {folder}: {V1_GRAPH} holds {graph.get_current_count()} items, "
                             f"{V1_META} describes {len(items)}")
    return store_meta, graph, live


def _rows(graph, live):
    """Batches of store rows, reading vectors from the graph a batch at a time (memory stays bounded)."""
    for start in range(0, len(live), BATCH):
        part = live[start:start + BATCH]
        vectors = np.asarray(graph.get_items([lab for lab, _, _ in part], return_type="numpy"), dtype="<f4")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # stored normalised already; stay exact
        yield [(None, key, record, v.tobytes()) for (_, key, record), v in zip(part, vectors)]


def _remove_v1_files(folder: Path) -> None:
    for name in (V1_META, V1_GRAPH):
        (folder / name).unlink(missing_ok=True)
    fsync_dir(folder)
    siblings = [*folder.parent.glob(f".{folder.name}.tmp-*"), *folder.parent.glob(f".{folder.name}.old-*")]
    for sibling in siblings:
        names = {p.name for p in sibling.iterdir()} if sibling.is_dir() else None
        if names is not None and names <= {V1_META, V1_GRAPH}:  # a killed version-1 save's folder
            for p in sibling.iterdir():
                p.unlink()
            sibling.rmdir()


def convert(folder) -> bool:
    """Convert the version-1 index in ``folder`` to the store, in place; True when this call converted it.
    Several processes may call it at once: the folder lock makes one convert and the others find it done."""
    folder = Path(folder)
    with folder_lock(folder):
        if (folder / DB_FILE).exists():  # converted already: finish removing the old files
            if is_v1(folder):
                _remove_v1_files(folder)
            return False
        meta, graph, live = _read(folder)
        try:
            create_db(folder, meta, _rows(graph, live))
        except OSError as exc:
            raise IndexFileError(f"index {folder}: converting to {DB_FILE} failed ({exc})") from exc
        _remove_v1_files(folder)
    log.info("index %s: converted a version-1 index (%d items) to %s", folder, len(live), DB_FILE)
    return True
