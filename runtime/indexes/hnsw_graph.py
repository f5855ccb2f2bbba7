"""The in-memory side of the hnswlib backend: the HNSW graph and a mirror of the live items' ids and
metadata, keyed by graph label (the store's seq), with the ``labels`` search filter. Not thread-safe on
its own: ``HnswIndex`` holds its lock around every call.
"""
from __future__ import annotations

import hnswlib
import numpy as np

import json
import logging

from .. import jsonio
from ..errors import IndexFileError
from .inputs import RECORD_MAX_BYTES, RECORD_MAX_DEPTH

log = logging.getLogger(__name__)
_reported: set = set()  # items whose damaged record was logged already

LABEL_KEYS = ("labels", "predicted_labels")  # metadata fields the ``labels`` search filter looks at


def read_record(text) -> dict:
    """An item's metadata record as stored (JSON text), read with the bounds it was written with
    (``inputs.RECORD_MAX_*``): a damaged index.db gives an IndexFileError naming the problem."""
    what = "an item's metadata in the index"
    if not isinstance(text, str):
        raise IndexFileError(f"{what}: not text")
    return jsonio.expect(jsonio.loads(text, what, error=IndexFileError, max_bytes=RECORD_MAX_BYTES,
                                      max_depth=RECORD_MAX_DEPTH), dict, what, error=IndexFileError)


def readable(item_id: str, text) -> dict | None:
    """``read_record``, or None (logged) for a record no reader can render: such an item is left out of
    answers instead of failing every query that would return it. This runs for every search hit: a record
    plainly within the bounds (fewer brackets than the depth bound) is parsed by the C decoder alone."""
    plain = isinstance(text, str) and len(text) <= RECORD_MAX_BYTES
    if plain and text.count("[") + text.count("{") <= RECORD_MAX_DEPTH:
        try:
            meta = json.loads(text)
            if isinstance(meta, dict):
                return meta
        except ValueError:
            pass  # read_record names the problem below
    try:
        return read_record(text)
    except IndexFileError as exc:
        if len(_reported) < 1000 and item_id not in _reported:  # once per item, not once per query
            _reported.add(item_id)
            log.error("index item %r is left out of answers: %s", str(item_id)[:80], exc)
        return None


def label_names(record: str) -> set:
    """The label names in a metadata record (JSON text); most records without labels are not parsed, and
    a damaged one carries none."""
    if not isinstance(record, str) or "labels" not in record:
        return set()
    try:
        meta = read_record(record)
    except IndexFileError:
        return set()
    names = set()
    for key in LABEL_KEYS:
        value = meta.get(key)
        values = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
        names.update(v for v in values if isinstance(v, str))
    return names


class Graph:
    """An hnswlib graph (inner product over unit vectors = cosine) and the items it holds."""

    def __init__(self, dim: int, M: int, ef_construction: int, capacity: int = 1,
                 graph: hnswlib.Index | None = None):
        """A new empty graph, or ``graph`` (a loaded checkpoint; ``apply_items`` without vectors then
        names its items)."""
        if graph is None:
            graph = hnswlib.Index(space="ip", dim=dim)
            graph.init_index(max_elements=max(capacity, 1), ef_construction=ef_construction, M=M)
        self.hnsw = graph
        self.items: dict = {}       # label -> (id, metadata JSON) of live items
        self.labels: dict = {}      # live id -> label
        self._by_label = None       # see ``by_label``
        self._exact = None          # cached (labels, vectors) of live items for exact search

    def apply_items(self, seqs, ids, records, vectors=None) -> None:
        """Take in items; with ``vectors`` also into the graph (without, the graph holds them already)."""
        if vectors is not None:
            needed = self.hnsw.get_current_count() + len(seqs)
            if needed > self.hnsw.get_max_elements():
                self.hnsw.resize_index(max(needed, 2 * self.hnsw.get_max_elements()))
            self.hnsw.add_items(vectors, seqs)
        for seq, key, record in zip(np.asarray(seqs).tolist(), ids, records):
            self.items[seq] = (key, record)
            self.labels[key] = seq
            if self._by_label is not None:
                self._add_label_names(seq, record)
        self._exact = None

    @property
    def by_label(self) -> dict:
        """Label name -> graph labels of the live items carrying it. Built at the first filtered search, not
        at open, where it would parse every item's metadata JSON for searches that may never filter."""
        if self._by_label is None:
            self._by_label = {}
            for seq, (_, record) in self.items.items():
                self._add_label_names(seq, record)
        return self._by_label

    def _add_label_names(self, seq: int, record: str) -> None:
        for name in label_names(record):
            self._by_label.setdefault(name, set()).add(seq)

    def apply_removals(self, seqs) -> None:
        for seq in np.asarray(seqs).tolist():
            item = self.items.pop(seq, None)
            if item is not None:
                if self.labels.get(item[0]) == seq:  # not an id that came back under a newer seq
                    del self.labels[item[0]]
                if self._by_label is not None:
                    for name in label_names(item[1]):
                        self._by_label[name].discard(seq)
            try:
                self.hnsw.mark_deleted(seq)
            except RuntimeError:  # deleted already in the checkpoint the graph came from
                pass
        self._exact = None

    def vectors(self, labels) -> np.ndarray:
        return np.asarray(self.hnsw.get_items(labels, return_type="numpy"), dtype=np.float32)

    def store_rows(self, batch: int = 2048):
        """The live items as batches of store rows (seq = label, id, metadata JSON, float32 vector bytes),
        to seed a new store with an in-memory index's items."""
        labels = sorted(self.items)
        for i in range(0, len(labels), batch):
            part = labels[i:i + batch]
            yield [(s, *self.items[s], v.astype("<f4").tobytes()) for s, v in zip(part, self.vectors(part))]

    def search(self, q: np.ndarray, k: int, wanted: frozenset | None, ef: int, exact: bool) -> list:
        """Per row of ``q``, the ``k`` best live items as ((id, metadata JSON), score)."""
        allowed = None
        if wanted is not None:
            allowed = set().union(*(self.by_label.get(name, ()) for name in wanted))
        k = min(int(k), len(self.labels) if allowed is None else len(allowed))
        if k == 0:
            return [[] for _ in q]
        if exact:
            found, scores = self._exact_search(q, k, allowed)
        else:
            self.hnsw.set_ef(max(int(ef), k))
            try:
                if allowed is None:
                    found, distances = self.hnsw.knn_query(q, k=k)
                else:  # the filter is a Python callable: one thread avoids contending for the GIL
                    found, distances = self.hnsw.knn_query(q, k=k, num_threads=1, filter=allowed.__contains__)
                scores = 1.0 - distances
            except RuntimeError:  # too few reachable live items (many removed, small ef): fall back
                found, scores = self._exact_search(q, k, allowed)
        scores = np.asarray(scores, dtype=np.float32)
        rows = [[(self.items[int(lab)], s) for lab, s in zip(row, srow) if int(lab) in self.items]
                for row, srow in zip(found, scores)]
        return rows

    def _exact_search(self, q: np.ndarray, k: int, allowed: set | None = None):
        if self._exact is None:
            live = np.array(sorted(self.items), dtype=np.int64)
            self._exact = (live, self.vectors(live))
        labels, vectors = self._exact
        if allowed is not None:
            keep = np.isin(labels, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
            labels, vectors = labels[keep], vectors[keep]
        sims = q @ vectors.T
        if k < sims.shape[1]:  # partial selection first: O(n) instead of sorting every item
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            order = np.lexsort((part, -np.take_along_axis(sims, part, axis=1)), axis=1)
            top = np.take_along_axis(part, order, axis=1)
        else:
            top = np.argsort(-sims, axis=1, kind="stable")
        return labels[top], np.take_along_axis(sims, top, axis=1)
