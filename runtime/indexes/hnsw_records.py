"""Rewriting an hnsw index's item records in place, and the photo roots it records.

Why apart from ``hnsw.py``: these change what an index says about its items (``dagnn index upgrade`` gives
older items the fields every record now has, and paths relative to the index), not how it searches.
Each batch is one committed ``Store.replace``, so an interrupted upgrade keeps what it did and a rerun
finishes the rest; other processes take the change by replaying, as for any other write.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError
from .hnsw_graph import read_record
from .paths import RELATIVE, shown, stored
from .store import KEEP


def rewrite(index, fix, batch: int = 500) -> int:
    """``fix(ids, vectors, metadata)`` -> per item its new metadata, or None to leave it. Returns how many
    items changed. Afterwards the index stores its photo paths relative to its folder.

    An older index holds paths relative to the folder it was built from: those are first rewritten
    absolute (readable either way, so an interrupted run leaves nothing ambiguous), then, once every item
    is, the index is marked and they become relative to it."""
    if index._store is None:
        raise InputError(f"index {index.location or '(in memory)'} is not stored: nothing to upgrade")
    changed = set()
    _rewrite_pass(index, fix, batch, changed)
    if index._base is None:
        with index._lock:
            index._store.update_meta("paths", lambda text: (json.dumps(RELATIVE), None))
            index._base = os.path.abspath(index.location)
        _rewrite_pass(index, lambda ids, vectors, metas: [m if _absolute(m.get("path")) else None for m in metas],
                      batch, changed)
    return len(changed)


def _rewrite_pass(index, fix, batch: int, changed: set) -> None:
    ids = index.ids
    for start in range(0, len(ids), batch):
        with index._lock:
            graph, base = index._graph, index._base
            part = [key for key in ids[start:start + batch] if key in graph.labels]
            metas = [shown(read_record(graph.items[graph.labels[key]][1]), base) for key in part]
            new = fix(part, graph.vectors([graph.labels[key] for key in part]), [dict(m) for m in metas])
            if base is None:  # relative paths start where the index was built from: made absolute here
                new = [meta if meta is not None or not _relative(old.get("path")) else old
                       for meta, old in zip(new, metas)]
            todo = [(key, json.dumps(stored(meta, base), ensure_ascii=False, allow_nan=False))
                    for key, meta in zip(part, new) if meta is not None]
            if todo:
                index._store.replace([key for key, _ in todo], [record for _, record in todo])
                index._catch_up()
                changed.update(key for key, _ in todo)


def _absolute(path) -> bool:
    return isinstance(path, str) and Path(path).is_absolute()


def _relative(path) -> bool:
    return isinstance(path, str) and bool(path) and not Path(path).is_absolute()


def record_roots(index, folders) -> None:
    """Add ``folders`` (the photo folders given to ``ingest``) to the roots the index records."""
    if index._store is None or not folders:
        return
    new = [stored({"path": str(folder)}, index._base)["path"] for folder in folders]
    if set(new) <= set(index._store.meta.get("roots") or ()):
        return  # recorded already (by this process or when it opened): no write transaction for each add

    def merge(text):
        old = json.loads(text) if text else []
        merged = old + [root for root in new if root not in old]
        return (KEEP if merged == old else json.dumps(merged)), None

    with index._lock:
        index._store.update_meta("roots", merge)


def roots(index) -> list:
    """The recorded photo roots, as absolute paths."""
    recorded = index._store.meta.get("roots", []) if index._store is not None else []
    return [shown({"path": root}, index._base)["path"] for root in recorded if isinstance(root, str)]
