"""The hnswlib backend: cosine k-NN over an in-memory HNSW graph, kept in an index store on disk.

At a location, the index is a folder whose SQLite database (``store``) is the source of truth: every
``add`` and ``remove`` is one committed transaction, so several processes can write to one index and an
acknowledged change survives kill -9. The graph is derived from it: loaded from the last checkpoint
(``checkpoint``) and brought up to date by replaying newer rows, again before each search when another
process changed the store. Version-1 folders are converted on open (``legacy``). ``build`` and an index
without a location live in memory only. Capacity grows on its own; removal marks items deleted.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..atomic import recover
from ..constants import MODALITIES
from ..errors import IndexFileError, InputError, positive_int
from . import checkpoint, hnsw_records, legacy
from .base import Hit, check_identity
from .hnsw_graph import Graph, read_record, readable
from .inputs import additions, item_key, item_keys, search_options, unit_vectors
from .paths import RELATIVE, shown, stored
from .store import Store
from .store_file import check_joinable

PARAMS = ("M", "ef_construction", "ef")


class HnswIndex:
    """Cosine k-NN over L2-normalised vectors with ids and metadata. Safe to share between threads."""

    def __init__(self, dim: int, embedding_space: str, modality: str | None = None, M: int = 16,
                 ef_construction: int = 200, ef: int = 128, capacity: int | None = 1024, location=None,
                 bundle_digest: str | None = None):
        """``capacity`` is only a first allocation: ``add`` grows it. ``location``: the folder of its
        store, created by the first ``add`` or ``save``; an index without one lives in memory only.
        ``bundle_digest``: the identity of the bundle whose embeddings it holds (None: not recorded)."""
        if capacity is not None:
            capacity = positive_int(capacity, "capacity")
        dim = positive_int(dim, "index dimension")
        if not isinstance(embedding_space, str) or not embedding_space:
            raise InputError("an index needs the embedding_space of the bundle whose embeddings it holds")
        if modality is not None and modality not in MODALITIES:
            raise InputError(f"modality must be one of {MODALITIES}, got {modality!r}")
        self.dim, self.embedding_space, self.modality = dim, embedding_space, modality
        self.bundle_digest = bundle_digest or None
        self.M, self.ef_construction, self.ef = int(M), int(ef_construction), int(ef)
        self.location = None if location is None else str(location)
        self._g = Graph(dim, self.M, self.ef_construction, capacity or 1)
        self._lock = threading.RLock()
        self._store: Store | None = None
        self._marks = (0, 0)          # (last item seq, last removal seq) the graph covers
        self._checkpointed = (0, 0)   # marks of the last checkpoint this copy loaded or wrote
        self.checkpoint_min = checkpoint.MIN_CHANGES
        self.converted = False        # opened a version-1 folder and converted it
        self._base = None             # the folder stored photo paths start from (None: stored absolute)

    @classmethod
    def for_model(cls, model, modality: str | None = None, **kwargs) -> "HnswIndex":
        """An empty index for embeddings of ``model`` (a loaded bundle)."""
        kwargs.setdefault("bundle_digest", getattr(model, "bundle_digest", None))
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
        self.refresh()
        return len(self._graph.labels)

    def __contains__(self, item_id) -> bool:
        return bool(self.present([item_id]))

    def present(self, ids) -> set:
        self.refresh()
        return {i for i in ids if item_key(i) in self._graph.labels}

    def __repr__(self) -> str:
        return f"<HnswIndex {self.location or '(in memory)'}: {len(self._g.labels)} {self.modality or ''} items>"

    @property
    def ids(self) -> list:
        self.refresh()
        with self._lock:
            return list(self._graph.labels)

    @property
    def capacity(self) -> int:
        return self._graph.hnsw.get_max_elements()

    @property
    def _graph(self) -> Graph:
        if self._g is None:
            raise IndexFileError(f"index {self.location or '(in memory)'} is closed")
        return self._g

    def metadata(self, item_id) -> dict:
        key = item_key(item_id)
        self.refresh()
        with self._lock:
            label = self._graph.labels.get(key)
            if label is None:
                raise InputError(f"id {item_id!r:.80} is not in the index")
            return shown(read_record(self._graph.items[label][1]), self._base)

    def info(self) -> dict:
        self.refresh()
        with self._lock:
            g = self._graph
            return {"items": len(g.labels), "removed": g.hnsw.get_current_count() - len(g.labels),
                    "capacity": self.capacity, "dim": self.dim, "space": "cosine", "modality": self.modality,
                    "embedding_space": self.embedding_space, "bundle_digest": self.bundle_digest, "M": self.M,
                    "ef_construction": self.ef_construction, "ef": self.ef,
                    "location": self.location, "roots": hnsw_records.roots(self),
                    "pending_checkpoint": checkpoint.pending(self._marks, self._checkpointed),
                    "damaged": sorted(self._store.damaged) if self._store is not None else []}

    def check_space(self, model_or_space, what: str = "bundle") -> None:
        """Refuse a bundle (or embedding_space string) of another space, or a bundle of another digest."""
        check_identity(f"index {self.location or '(in memory)'}", self.embedding_space, self.bundle_digest,
                       model_or_space, what)

    rewrite = hnsw_records.rewrite            # new metadata in committed batches (dagnn index upgrade)
    record_roots = hnsw_records.record_roots  # remember the photo folders items were indexed from

    # ---- changes -------------------------------------------------------------------------------------
    def add(self, vectors, ids, metadata=None) -> None:
        """Add items; all-or-nothing: a wrong dimension, a duplicate id or bad metadata changes nothing.
        At a location, the items are committed to the store before this returns; photo paths are stored
        relative to it (``paths``)."""
        with self._lock:
            new_store = self._store is None and self.location is not None
            base = Path(self.location) if new_store else self._base
            metadata = None if metadata is None else [stored(m, base) if isinstance(m, dict) else m for m in metadata]
            keys, v, records = additions(vectors, ids, metadata, self.dim)
            if self._store is None and self.location is not None:
                self._open_store()
            if self._store is not None:  # the store refuses duplicates, also those of other writers
                if keys:
                    self._store.add(keys, v, records)
                self._catch_up()
                self._checkpoint_if_due()
                return
            present = [k for k in keys if k in self._graph.labels]
            if present:
                raise InputError(f"id {present[0]!r:.80} is already in the index ({len(present)} duplicate "
                                 "ids); remove it first to replace it")
            first = self._marks[0] + 1
            self._graph.apply_items(np.arange(first, first + len(keys), dtype=np.int64), keys, records, v)
            self._marks = (self._marks[0] + len(keys), self._marks[1])

    def remove(self, ids) -> None:
        """Mark items deleted; they are never returned again. Unknown ids are refused, changing nothing."""
        keys = list(dict.fromkeys(item_keys(ids)))
        with self._lock:
            if self._store is not None:
                self._store.remove(keys)
                self._catch_up()
                self._checkpoint_if_due()
                return
            unknown = [k for k in keys if k not in self._graph.labels]
            if unknown:
                raise InputError(f"id {unknown[0]!r:.80} is not in the index ({len(unknown)} unknown ids)")
            self._graph.apply_removals([self._graph.labels[k] for k in keys])
            self._marks = (self._marks[0], self._marks[1] + len(keys))

    # ---- search --------------------------------------------------------------------------------------
    def search(self, vectors, k: int = 10, *, labels=None, ef: int | None = None,
               exact: bool = False) -> list[list[Hit]]:
        """Per query vector, the ``k`` most cosine-similar items, best first (fewer when the index holds
        fewer). ``labels``: only items whose metadata ``labels`` or ``predicted_labels`` contain any of
        them. ``exact`` ranks by brute force (numpy) instead of the graph; ``ef`` overrides the index's
        search breadth. Another process's committed changes are seen first."""
        wanted = search_options(k, ef, labels)
        q = unit_vectors(vectors, self.dim, "query vectors")
        self.refresh()
        with self._lock:
            rows = self._graph.search(q, k, wanted, ef or self.ef, exact)
        return [[Hit(key, float(s), shown(meta, self._base)) for (key, text), s in row
                 if (meta := readable(key, text)) is not None] for row in rows]

    # ---- the store -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder, model=None) -> "HnswIndex":
        """Open the index in ``folder`` (converting a version-1 folder once); with ``model`` (a bundle or
        embedding_space), refuse another space."""
        folder = Path(folder)
        if not folder.is_dir() and not (recover(folder) and folder.is_dir()):  # a version-1 save killed
            raise IndexFileError(f"index {folder}: no such folder")              # between its two renames
        converted = legacy.convert(folder) if legacy.is_v1(folder) else False
        store = Store(folder)
        try:
            meta = store.meta
            index = cls(store.dim, meta["embedding_space"], modality=meta.get("modality"), capacity=1,
                        location=folder, bundle_digest=meta.get("bundle_digest"),
                        **{p: meta[p] for p in PARAMS if p in meta})
            index._attach(store)
        except BaseException:
            store.close()
            raise
        index.converted = converted
        if model is not None:
            index.check_space(model)
        return index

    def _attach(self, store: Store) -> None:
        """Take the graph from the store's checkpoint (or rebuild it) and replay what is newer."""
        self._store = store
        self._base = os.path.abspath(self.location) if store.meta.get("paths") == RELATIVE else None
        checkpoint.remove_leftovers(store)
        loaded = checkpoint.load(store)
        if loaded is not None:
            self._g = Graph(self.dim, self.M, self.ef_construction, graph=loaded[0])
            self._marks = self._checkpointed = loaded[1]
        g = self._graph
        self._marks = store.replay(self._marks, g.apply_items, g.apply_removals, on_known=g.apply_items)
        store.changed()  # what is replayed now counts as seen

    def _open_store(self) -> None:
        """Create the store at ``location`` with this in-memory index's items (their labels become its
        seqs), or open the one another process created there meanwhile when this index is still empty."""
        meta = {"dim": self.dim, "embedding_space": self.embedding_space, "space": "cosine",
                "modality": self.modality, "paths": RELATIVE, **{p: getattr(self, p) for p in PARAMS},
                **({"bundle_digest": self.bundle_digest} if self.bundle_digest else {})}
        g = self._graph
        seeded = bool(g.items)
        store = Store.create(self.location, meta, g.store_rows(), last_seq=self._marks[0])
        if not store.created:
            found = store.meta
            store.close()
            if seeded or self._marks != (0, 0):
                raise IndexFileError(f"index {self.location} exists already: open it to add to it")
            check_joinable(self.location, found, self.dim, self.embedding_space, self.bundle_digest)
            self.bundle_digest = found.get("bundle_digest")  # what the store records is what this index is
            store = Store(self.location)
        self._marks = (self._marks[0], 0)  # removed items were never written: no removals to replay
        self._attach(store)
        if seeded:
            self._checkpoint_if_due(force=True)

    def _catch_up(self) -> None:
        g = self._graph
        self._marks = self._store.replay(self._marks, g.apply_items, g.apply_removals)

    def refresh(self) -> None:
        """See the changes other writers committed since this copy last looked (cheap when there are none)."""
        with self._lock:
            if self._store is not None and self._store.changed():
                self._catch_up()

    def _checkpoint_if_due(self, force: bool = False, closing: bool = False) -> None:
        self._checkpointed = checkpoint.write_if_due(self._graph, self._store, self._marks, self._checkpointed,
                                                     self.checkpoint_min, force=force, closing=closing)

    def save(self, location=None) -> None:
        """Changes are durable when ``add``/``remove`` return; this writes the graph checkpoint when
        enough changed since the last one (``checkpoint()`` forces it). ``location`` gives an in-memory
        index a folder: its store is created there with the items."""
        with self._lock:
            if location is not None and str(location) != self.location:
                if self._store is not None:
                    raise InputError(f"index {self.location} is stored there; it cannot move to {location}")
                self.location = str(location)
            if self.location is None:
                raise InputError("this index lives in memory only: give save() a folder to write it to")
            if self._store is None:
                self._open_store()
            self._checkpoint_if_due()

    def checkpoint(self) -> None:
        """Write the graph checkpoint now (when anything changed since the last one)."""
        with self._lock:
            self._checkpoint_if_due(force=True)

    def close(self) -> None:
        """Write a checkpoint when due for a closing writer (``checkpoint.due``), then free the graph's
        memory and the database connection."""
        with self._lock:
            if self._g is None:
                return
            try:
                self._checkpoint_if_due(closing=True)
            finally:
                if self._store is not None:
                    self._store.close()
                self._g = None
