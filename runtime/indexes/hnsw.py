"""The hnswlib backend: cosine k-NN in memory, saved as one folder (``hnsw_files``).

Capacity grows on its own; removal marks items deleted.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import hnswlib
import numpy as np

from ..constants import MODALITIES
from ..errors import IndexFileError, InputError, MismatchError
from .base import Hit
from .hnsw_files import GRAPH_FILE, META_FILE, read_folder, stamp, write_folder

LABEL_KEYS = ("labels", "predicted_labels")  # metadata fields the ``labels`` search filter looks at

log = logging.getLogger(__name__)


def _space_of(model_or_space) -> str:
    return getattr(model_or_space, "embedding_space", model_or_space)


def _label_names(meta: dict) -> set:
    names = set()
    for key in LABEL_KEYS:
        value = meta.get(key)
        values = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
        names.update(v for v in values if isinstance(v, str))
    return names


def _wanted_labels(labels) -> frozenset | None:
    if labels is None:
        return None
    wanted = [labels] if isinstance(labels, str) else list(labels)
    if not wanted or not all(isinstance(x, str) and x for x in wanted):
        raise InputError(f"labels must be a non-empty list of label names, got {labels!r}"[:120])
    return frozenset(wanted)


class HnswIndex:
    """Cosine k-NN over L2-normalised vectors with ids and metadata. Safe to share between threads."""

    def __init__(self, dim: int, embedding_space: str, modality: str | None = None, M: int = 16,
                 ef_construction: int = 200, ef: int = 128, capacity: int | None = 1024, location=None):
        """``capacity`` is only a first allocation: ``add`` grows it. (``None`` is for ``load``.)
        ``location``: the folder ``save()`` writes; an index without one lives in memory only."""
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
            raise InputError(f"capacity must be a positive integer, got {capacity!r}")
        if not isinstance(dim, int) or dim < 1:
            raise InputError(f"index dimension must be a positive integer, got {dim!r}")
        if not isinstance(embedding_space, str) or not embedding_space:
            raise InputError("an index needs the embedding_space of the bundle whose embeddings it holds")
        if modality is not None and modality not in MODALITIES:
            raise InputError(f"modality must be one of {MODALITIES}, got {modality!r}")
        self.dim, self.embedding_space, self.modality = dim, embedding_space, modality
        self.M, self.ef_construction, self.ef = int(M), int(ef_construction), int(ef)
        self.location = None if location is None else str(location)
        self._graph = hnswlib.Index(space="ip", dim=dim)
        if capacity is not None:  # None: ``load`` fills the graph from a file instead
            self._graph.init_index(max_elements=capacity, ef_construction=self.ef_construction, M=self.M)
        self._items: list = []        # per hnswlib label: (id, metadata JSON) or None once removed
        self._labels: dict = {}       # live id -> hnswlib label
        self._by_label: dict = {}     # label name (metadata labels/predicted_labels) -> set of hnswlib labels
        self._lock = threading.RLock()
        self._exact = None            # cached (labels, vectors) of live items for exact search
        self._dirty = True            # changes not yet at ``location`` (a new index is not there at all)
        self._stamp = None            # index.json's identity when this copy was loaded or saved
        self._closed = False

    @classmethod
    def for_model(cls, model, modality: str | None = None, **kwargs) -> "HnswIndex":
        """An empty index for embeddings of ``model`` (a loaded bundle)."""
        return cls(model.embedding_dim, model.embedding_space, modality=modality, **kwargs)

    @classmethod
    def build(cls, vectors, ids, metadata=None, *, embedding_space: str, modality: str | None = None,
              **kwargs) -> "HnswIndex":
        """An in-memory index of these vectors (``save(location)`` writes it)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise InputError(f"vectors must be a (n, d) matrix, got shape {vectors.shape}")
        index = cls(vectors.shape[1], embedding_space, modality=modality, capacity=max(len(vectors), 1), **kwargs)
        index.add(vectors, ids, metadata)
        return index

    # ---- contents ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item_id) -> bool:
        return self._key(item_id) in self._labels

    def __repr__(self) -> str:
        return f"<HnswIndex {self.location or '(in memory)'}: {len(self)} {self.modality or ''} items, d={self.dim}>"

    @property
    def ids(self) -> list:
        with self._lock:
            return list(self._labels)

    @property
    def capacity(self) -> int:
        return self._g.get_max_elements()

    @property
    def _g(self) -> hnswlib.Index:
        if self._closed:
            raise IndexFileError(f"index {self.location or '(in memory)'} is closed")
        return self._graph

    def metadata(self, item_id) -> dict:
        with self._lock:
            label = self._labels.get(self._key(item_id))
            if label is None:
                raise InputError(f"id {item_id!r} is not in the index")
            return json.loads(self._items[label][1])

    def info(self) -> dict:
        with self._lock:
            return {"items": len(self._labels), "removed": len(self._items) - len(self._labels),
                    "capacity": self.capacity, "dim": self.dim, "space": "cosine", "modality": self.modality,
                    "embedding_space": self.embedding_space, "M": self.M,
                    "ef_construction": self.ef_construction, "ef": self.ef}

    @staticmethod
    def _key(item_id) -> str:
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int, np.integer)):
            raise InputError(f"ids must be strings (or integers), got {type(item_id).__name__}")
        key = str(item_id)
        if not key:
            raise InputError("ids must not be empty")
        return key

    def _vectors(self, vectors, what: str) -> np.ndarray:
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim == 1:
            v = v[None]
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise InputError(f"{what} have shape {np.shape(vectors)}, this index holds {self.dim}-d vectors")
        if not np.isfinite(v).all():
            raise InputError(f"{what} contain NaN or infinite values")
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InputError(f"{what} contain an all-zero vector (its cosine is undefined)")
        return np.ascontiguousarray(v / norms)

    def check_space(self, model_or_space, what: str = "bundle") -> None:
        """Refuse a bundle (or embedding_space string) whose embeddings live in another space."""
        space = _space_of(model_or_space)
        if space != self.embedding_space:
            raise MismatchError(f"this index holds embeddings of space {self.embedding_space[:12]}…, the {what} "
                                f"produces space {str(space)[:12]}…: rebuild the index with this bundle")

    # ---- changes -------------------------------------------------------------------------------------
    def add(self, vectors, ids, metadata=None) -> None:
        """Add items; all-or-nothing: a wrong dimension, a duplicate id or bad metadata changes nothing."""
        v = self._vectors(vectors, "vectors to add")
        keys = [self._key(i) for i in ids] if not isinstance(ids, (str, int)) else [self._key(ids)]
        if len(keys) != len(v):
            raise InputError(f"{len(v)} vectors but {len(keys)} ids")
        if metadata is None:
            metadata = [{}] * len(keys)
        metadata = list(metadata)
        if len(metadata) != len(keys):
            raise InputError(f"{len(keys)} ids but {len(metadata)} metadata records")
        records = []
        for key, meta in zip(keys, metadata):
            if not isinstance(meta, dict):
                raise InputError(f"metadata of id {key!r} must be a dict, got {type(meta).__name__}")
            try:
                records.append(json.dumps(meta, ensure_ascii=False, allow_nan=False))
            except (TypeError, ValueError) as exc:
                raise InputError(f"metadata of id {key!r} is not plain JSON ({exc})") from exc
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise InputError(f"id {dup!r} appears twice in the items to add")
        with self._lock:
            present = [k for k in keys if k in self._labels]
            if present:
                raise InputError(f"id {present[0]!r} is already in the index ({len(present)} duplicate ids); "
                                 "remove it first to replace it")
            if not keys:
                return
            start = len(self._items)
            needed = start + len(keys)
            if needed > self.capacity:
                self._g.resize_index(max(needed, 2 * self.capacity))
            self._g.add_items(v, np.arange(start, needed, dtype=np.int64))
            self._items.extend(zip(keys, records))
            self._labels.update({k: start + j for j, k in enumerate(keys)})
            for j, meta in enumerate(metadata):
                self._index_labels(start + j, meta)
            self._exact, self._dirty = None, True

    def _index_labels(self, label: int, meta: dict) -> None:
        for name in _label_names(meta):
            self._by_label.setdefault(name, set()).add(label)

    def remove(self, ids) -> None:
        """Mark items deleted; they are never returned again. Unknown ids are refused, changing nothing."""
        keys = [self._key(ids)] if isinstance(ids, (str, int)) else [self._key(i) for i in ids]
        with self._lock:
            unknown = [k for k in keys if k not in self._labels]
            if unknown:
                raise InputError(f"id {unknown[0]!r} is not in the index ({len(unknown)} unknown ids)")
            for key in dict.fromkeys(keys):
                label = self._labels.pop(key)
                self._g.mark_deleted(label)
                for name in _label_names(json.loads(self._items[label][1])):
                    self._by_label[name].discard(label)
                self._items[label] = None
            self._exact, self._dirty = None, True

    # ---- search --------------------------------------------------------------------------------------
    def search(self, vectors, k: int = 10, *, labels=None, ef: int | None = None,
               exact: bool = False) -> list[list[Hit]]:
        """Per query vector, the ``k`` most cosine-similar items, best first (fewer when the index holds
        fewer). ``labels``: only items whose metadata ``labels`` or ``predicted_labels`` contain any of
        them. ``exact`` ranks by brute force (numpy) instead of the graph; ``ef`` overrides the index's
        search breadth."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        if ef is not None and (isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or ef < 1):
            raise InputError(f"ef must be a positive integer, got {ef!r}")
        wanted = _wanted_labels(labels)
        q = self._vectors(vectors, "query vectors")
        with self._lock:
            allowed = None
            if wanted is not None:
                allowed = set().union(*(self._by_label.get(name, ()) for name in wanted))
            k = min(int(k), len(self._labels) if allowed is None else len(allowed))
            if k == 0:
                return [[] for _ in q]
            if exact:
                found, scores = self._exact_search(q, k, allowed)
            else:
                self._g.set_ef(max(int(ef or self.ef), k))
                try:
                    if allowed is None:
                        found, distances = self._g.knn_query(q, k=k)
                    else:  # the filter is a Python callable: one thread avoids contending for the GIL
                        found, distances = self._g.knn_query(q, k=k, num_threads=1, filter=allowed.__contains__)
                    scores = 1.0 - distances
                except RuntimeError:  # too few reachable live items (many removed, small ef): fall back
                    found, scores = self._exact_search(q, k, allowed)
            rows = [[self._items[int(lab)] for lab in row] for row in found]
        scores = np.asarray(scores, dtype=np.float32)
        return [[Hit(item[0], float(s), json.loads(item[1])) for item, s in zip(row, srow)]
                for row, srow in zip(rows, scores)]

    def _exact_search(self, q: np.ndarray, k: int, allowed: set | None = None):
        if self._exact is None:
            live = np.array(sorted(self._labels.values()), dtype=np.int64)
            self._exact = (live, np.asarray(self._g.get_items(live, return_type="numpy"), dtype=np.float32))
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

    # ---- persistence ---------------------------------------------------------------------------------
    def save(self, location=None) -> None:
        """Write pending changes to ``location`` (given here or when opened) atomically: readers see the
        old or the new index, never a mix. Nothing to write when nothing changed since the last save."""
        if location is not None and str(location) != self.location:
            self.location, self._dirty = str(location), True
        if self.location is None:
            raise InputError("this index lives in memory only: give save() a folder to write it to")
        folder = Path(self.location)
        if not self._dirty and (folder / META_FILE).is_file():
            return
        with self._lock:
            meta = {"dim": self.dim, "space": "cosine", "modality": self.modality,
                    "embedding_space": self.embedding_space, "M": self.M, "ef_construction": self.ef_construction,
                    "ef": self.ef, "count": len(self._labels),
                    "items": [None if it is None else [it[0], json.loads(it[1])] for it in self._items]}
            self._stamp = write_folder(folder, lambda path: self._g.save_index(str(path)), meta)
            self._dirty = False
        log.info("saved %d items to %s", len(self), folder)

    def refresh(self) -> None:
        """Re-read the index when another writer saved a new version at ``location`` since this copy was
        opened or saved. Refused while this copy holds unsaved changes (one of them would be lost)."""
        if self.location is None or stamp(Path(self.location)) == self._stamp:
            return
        if self._dirty:
            raise IndexFileError(f"index {self.location} changed on disk while this copy has unsaved changes")
        fresh = type(self).load(self.location)
        with self._lock:
            for name in ("dim", "embedding_space", "modality", "M", "ef_construction", "ef", "_graph", "_items",
                         "_labels", "_by_label", "_exact", "_dirty", "_stamp"):
                setattr(self, name, getattr(fresh, name))

    def close(self) -> None:
        """Free the graph's memory; unsaved changes are dropped (call ``save`` first to keep them)."""
        with self._lock:
            self._closed, self._graph, self._exact = True, None, None

    @classmethod
    def load(cls, folder, model=None) -> "HnswIndex":
        """Read an index folder; with ``model`` (a bundle or embedding_space), refuse another space."""
        folder = Path(folder)
        meta, graph_path, found = read_folder(folder)
        try:
            dim, items = int(meta["dim"]), meta["items"]
            index = cls(dim, meta["embedding_space"], modality=meta.get("modality"), M=meta["M"],
                        ef_construction=meta["ef_construction"], ef=meta["ef"], capacity=None, location=folder)
            for label, item in enumerate(items):
                if item is not None:
                    key, record = item
                    index._items.append((cls._key(key), json.dumps(record, ensure_ascii=False)))
                    if index._items[-1][0] in index._labels:
                        raise IndexFileError(f"index {folder}: duplicate id {key!r} in {META_FILE}")
                    index._labels[index._items[-1][0]] = label
                    index._index_labels(label, record)
                else:
                    index._items.append(None)
        except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
            raise IndexFileError(f"index {folder}: {META_FILE} is malformed ({exc})") from exc
        try:
            index._graph.load_index(str(graph_path), max_elements=max(len(items), 1))
        except RuntimeError as exc:
            raise IndexFileError(f"index {folder}: cannot read {GRAPH_FILE} ({exc})") from exc
        if index._graph.get_current_count() != len(items) or index._graph.dim != dim:
            raise IndexFileError(f"index {folder}: {GRAPH_FILE} holds {index._graph.get_current_count()} "
                                 f"{index._graph.dim}-d vectors, {META_FILE} describes {len(items)} {dim}-d items")
        index._graph.set_ef(index.ef)
        index._dirty, index._stamp = False, found
        if model is not None:
            index.check_space(model)
        return index

