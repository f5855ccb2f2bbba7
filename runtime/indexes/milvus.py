"""The Milvus backend of ``VectorIndex``: one collection per modality in Milvus Lite (a local ``*.db`` path) or
a Milvus server/cluster (``http(s)://`` or ``tcp://`` URI; its token from ``token`` or $DAGNN_MILVUS_TOKEN).
Both take the same code path.

Why: past a few million photos the vectors (4 KB each at 1024-d) no longer fit one machine's memory, and
such users already run a vector database. Collection schema (``milvus_schema.create``)::

    id                VARCHAR primary key (at most 1024 bytes)
    vector            FLOAT_VECTOR(dim), L2-normalised; COSINE metric; HNSW index (M=16, efConstruction=200)
                      or IVF_FLAT (nlist=1024; search nprobe = ef)
    metadata          JSON: the item's metadata record, returned with each hit
    labels            ARRAY<VARCHAR>: metadata["labels"]           } so that a ``labels`` filter runs inside
    predicted_labels  ARRAY<VARCHAR>: metadata["predicted_labels"] } Milvus (ARRAY_CONTAINS_ANY)

The bundle identity (``embedding_space``), the modality and the index parameters are collection
properties. Writes are checked and then inserted; Milvus has no multi-request transaction, so a failure in
a later insert batch deletes the earlier batches of the same ``add`` before raising. Milvus refuses nothing
on a duplicate primary key (it overwrites), so ids are looked up before an insert; two writers adding the
same id at the same moment are not caught.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .. import jsonio
from ..errors import DagnnError, IndexFileError, InputError
from .base import Hit, check_identity
from .inputs import additions, item_key, item_keys, unit_vectors
from .paths import stored
from .milvus_schema import (BATCH, FORMAT, FORMAT_VERSION, MAX_ID_BYTES, MAX_K, collection_exists, collection_name,
                            connect, create_collection, is_milvus_location, label_filter, literal, shown, to_row,
                            token_of, wrapped)

log = logging.getLogger(__name__)

__all__ = ["MilvusIndex", "is_milvus_location", "collection_exists"]

class MilvusIndex:
    """One modality's items of one embedding space in a Milvus collection (cosine similarity)."""

    def __init__(self, client, uri: str, collection: str, *, modality, embedding_space: str, dim: int,
                 index_type: str, ef: int, bundle_digest: str | None = None):
        self._client, self.uri, self.collection = client, uri, collection
        self.modality, self.embedding_space, self.dim = modality, embedding_space, dim
        self.bundle_digest = bundle_digest or None  # of the bundle that created it; None: not recorded
        self.index_type, self.ef = index_type, ef
        self.index_params: dict = {}
        self.location = f"{shown(uri)}#{collection}"

    # ---- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(cls, uri, *, modality: str | None = None, model=None, create: bool = False, token: str | None = None,
             prefix: str = "dagnn", embedding_space: str | None = None, dim: int | None = None,
             index_type: str = "HNSW", M: int = 16, ef_construction: int = 200, ef: int = 128,
             timeout: float = 10.0, capacity=None) -> "MilvusIndex":
        """Open (or with ``create``, make) the collection ``<prefix>_<modality>`` at ``uri``; with ``model``
        (a bundle or an embedding_space string), refuse a collection of another space. ``M`` and
        ``ef_construction`` apply to a new HNSW collection; ``capacity`` is accepted for the hnsw backend's
        sake and unused (Milvus grows on its own)."""
        uri = str(uri)
        if not is_milvus_location(uri):
            raise InputError(f"not a Milvus location: {uri!r:.80} (use a *.db file or an http(s):// URI)")
        name = collection_name(prefix, modality)
        where = f"Milvus {shown(uri)} collection {name}"
        if uri.endswith(".db") and not create:
            if not Path(uri).exists():  # Milvus Lite keeps a folder (older releases: a file) at this path
                raise IndexFileError(f"{where}: no such Milvus Lite database")
        client = connect(uri, token_of(token), timeout, where)
        try:
            with wrapped(where, "open"):
                exists = client.has_collection(name)
            if not exists:
                if not create:
                    raise IndexFileError(f"{where}: no such collection (build the index first)")
                space = embedding_space or getattr(model, "embedding_space", model)
                dim = dim or getattr(model, "embedding_dim", None)
                if not isinstance(space, str) or not space or not dim:
                    raise InputError(f"{where}: creating a collection needs the bundle (embedding space and dim)")
                params = {"M": int(M), "efConstruction": int(ef_construction)} if index_type == "HNSW" else None
                create_collection(client, name, where, modality, space, int(dim), index_type, params,
                                  digest=getattr(model, "bundle_digest", None))
            index = cls._from_collection(client, uri, name, where, ef)
            if modality is not None and index.modality not in (None, modality):
                raise InputError(f"{where} holds {index.modality} items, not {modality} items")
            if model is not None:
                index.check_space(model)
            return index
        except BaseException:
            client.close()
            raise

    @classmethod
    def _from_collection(cls, client, uri, name, where, ef) -> "MilvusIndex":
        with wrapped(where, "describe"):
            desc = client.describe_collection(name)
            client.load_collection(name)  # a collection is released when its last client process ended
            index_desc = client.describe_index(name, "vector") or {}
        props = desc.get("properties") or {}
        fields = {f["name"]: f for f in desc.get("fields", [])}
        if props.get("dagnn.format") != FORMAT or "vector" not in fields or "metadata" not in fields:
            raise IndexFileError(f"{where}: not a dagnn index collection (no {FORMAT} properties)")
        if props.get("dagnn.format_version") != FORMAT_VERSION:
            raise IndexFileError(f"{where}: format_version {props.get('dagnn.format_version')!r} is not "
                                 f"supported (supported: {FORMAT_VERSION})")
        dim = int(fields["vector"]["params"]["dim"])
        index = cls(client, uri, name, modality=props.get("dagnn.modality") or None,
                    embedding_space=props["dagnn.embedding_space"], dim=dim,
                    index_type=index_desc.get("index_type", "HNSW"), ef=int(ef),
                    bundle_digest=props.get("dagnn.bundle_digest") or None)
        index.index_params = jsonio.expect(jsonio.loads(props.get("dagnn.index_params") or "{}",
                                                        f"{where} property dagnn.index_params", error=IndexFileError),
                                           dict, f"{where} property dagnn.index_params", error=IndexFileError)
        return index

    # ---- contents ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._wrapped("count"):
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def __contains__(self, item_id) -> bool:
        return bool(self.present([item_id]))

    def present(self, ids) -> set:
        keys = {item_key(i, MAX_ID_BYTES): i for i in ids}
        return {keys[key] for key in self._present(list(keys))}

    def metadata(self, item_id) -> dict:
        key = item_key(item_id, MAX_ID_BYTES)
        with self._wrapped("read metadata"):
            rows = self._client.query(self.collection, filter=f"id in {literal([key])}", output_fields=["metadata"])
        if not rows:
            raise InputError(f"id {key!r} is not in the index")
        return dict(rows[0]["metadata"] or {})

    def info(self) -> dict:
        return {"backend": "milvus", "uri": shown(self.uri), "collection": self.collection, "items": len(self),
                "dim": self.dim, "space": "cosine", "modality": self.modality,
                "embedding_space": self.embedding_space, "bundle_digest": self.bundle_digest,
                "index_type": self.index_type,
                "index_params": self.index_params, "ef": self.ef,
                "M": self.index_params.get("M", "-"), "removed": 0}  # Milvus compacts deletions itself

    def check_space(self, model_or_space, what: str = "bundle") -> None:
        """Refuse a bundle (or embedding_space string) of another space, or a bundle of another digest."""
        check_identity(f"index {self.location}", self.embedding_space, self.bundle_digest, model_or_space, what)

    # ---- changes -------------------------------------------------------------------------------------
    def add(self, vectors, ids, metadata=None) -> None:
        """Add items; a wrong dimension, a duplicate id or bad metadata is refused before anything is sent.
        Photo paths are stored absolute: a collection has no folder of its own to start them from."""
        metadata = None if metadata is None else [stored(m, None) if isinstance(m, dict) else m for m in metadata]
        keys, v, records = additions(vectors, ids, metadata, self.dim, MAX_ID_BYTES)
        rows = [to_row(key, vec, record) for key, vec, record in zip(keys, v, records)]
        present = self._present(keys)
        if present:
            raise InputError(f"id {present[0]!r} is already in the index ({len(present)} duplicate ids); "
                             "remove it first to replace it")
        done = 0
        try:
            for start in range(0, len(rows), BATCH):
                with self._wrapped("insert"):
                    self._client.insert(self.collection, rows[start:start + BATCH])
                done = start + BATCH
        except DagnnError:
            if done:
                log.warning("%s: insert failed after %d rows; deleting them again", self.location, done)
                self._delete(keys[:done])
            raise

    def remove(self, ids) -> None:
        """Delete items; unknown ids are refused, changing nothing."""
        keys = list(dict.fromkeys(item_keys(ids, MAX_ID_BYTES)))
        present = set(self._present(keys))
        unknown = [k for k in keys if k not in present]
        if unknown:
            raise InputError(f"id {unknown[0]!r} is not in the index ({len(unknown)} unknown ids)")
        self._delete(keys)

    def rewrite(self, fix, batch: int = BATCH) -> int:
        """``fix(ids, vectors, metadata)`` -> per item its new metadata or None; each page is one upsert, so
        an interrupted ``dagnn index upgrade`` keeps what it did. Returns how many items changed."""
        changed = 0
        for page in self._pages(["id", "vector", "metadata"], batch=batch):
            vectors = np.asarray([r["vector"] for r in page], dtype=np.float32)
            new = fix([r["id"] for r in page], vectors, [dict(r["metadata"] or {}) for r in page])
            keys, v, records = additions(vectors, [r["id"] for r in page], [stored(m or {}, None) for m in new],
                                         self.dim, MAX_ID_BYTES)
            rows = [to_row(k, vec, rec) for k, vec, rec, m in zip(keys, v, records, new) if m is not None]
            if rows:
                with self._wrapped("upsert"):
                    self._client.upsert(self.collection, rows)
                changed += len(rows)
        return changed

    def record_roots(self, folders) -> None:
        """Nothing to record: a collection stores photo paths absolute (``add``)."""

    def save(self) -> None:
        """Seal the growing segments: inserts are durable once this returns. Milvus indexes the sealed rows
        in the background; until it is done their searches are slower (measured in docs/scale.md)."""
        with self._wrapped("flush"):
            self._client.flush(self.collection)

    def refresh(self) -> None:
        """Nothing to do: the collection is read with Strong consistency, so other writers' changes show."""

    def close(self) -> None:
        self._client.close()

    # ---- search --------------------------------------------------------------------------------------
    def search(self, vectors, k: int = 10, *, labels=None, ef=None, exact=False) -> list[list[Hit]]:
        """The ``k`` most cosine-similar items per query, best first. ``labels`` keeps items whose labels or
        predicted labels contain any of them (filtered inside Milvus); ``exact`` ranks every item (slow)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
            raise InputError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        q = unit_vectors(vectors, self.dim, "query vectors")
        expr = label_filter(labels)
        if exact:
            return self._exact(q, int(k), expr)
        breadth = max(int(ef or self.ef), int(k))
        params = {"ef": breadth} if self.index_type == "HNSW" else {"nprobe": min(breadth, 1024)}
        hits = []
        for start in range(0, len(q), 256):
            with self._wrapped("search"):
                found = self._client.search(self.collection, data=q[start:start + 256].tolist(), limit=int(k),
                                            filter=expr, output_fields=["metadata"],
                                            search_params={"metric_type": "COSINE", "params": params})
            hits += [[Hit(h["id"], float(h["distance"]), dict(h["entity"].get("metadata") or {})) for h in row]
                     for row in found]
        return hits

    def _exact(self, q: np.ndarray, k: int, expr: str) -> list[list[Hit]]:
        """Brute force over every stored vector, page by page (memory: one page + k per query)."""
        best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_i = np.empty((len(q), 0), dtype=object)
        meta = {}
        for page in self._pages(["id", "vector", "metadata"], expr):
            ids = np.array([r["id"] for r in page], dtype=object)
            sims = q @ np.asarray([r["vector"] for r in page], dtype=np.float32).T
            all_s, all_i = np.hstack([best_s, sims]), np.hstack([best_i, np.broadcast_to(ids, sims.shape)])
            order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)
            keep = set(best_i.ravel())
            meta = {key: m for key, m in meta.items() if key in keep}
            meta.update({r["id"]: r["metadata"] for r in page if r["id"] in keep})
        return [[Hit(str(i), float(s), dict(meta[i] or {})) for i, s in zip(row_i, row_s)]
                for row_i, row_s in zip(best_i, best_s)]

    def _pages(self, fields: list, expr: str = "", batch: int = BATCH):
        """The collection's rows (``expr`` matching) in primary-key order, a page at a time."""
        last = ""
        while True:
            cond = f"id > {json.dumps(last, ensure_ascii=False)}" + (f" and ({expr})" if expr else "")
            with self._wrapped("read items"):
                page = self._client.query(self.collection, filter=cond, limit=batch, iterator="True",
                                          reduce_stop_for_best="True", output_fields=fields)
            if not page:
                return
            last = page[-1]["id"]
            yield page

    # ---- helpers -------------------------------------------------------------------------------------
    def _present(self, keys: list) -> list:
        found = []
        for start in range(0, len(keys), BATCH):
            with self._wrapped("look up ids"):
                rows = self._client.query(self.collection, filter=f"id in {literal(keys[start:start + BATCH])}",
                                          output_fields=["id"])
            found += [r["id"] for r in rows]
        return found

    def _delete(self, keys: list) -> None:
        for start in range(0, len(keys), BATCH):
            with self._wrapped("delete"):
                self._client.delete(self.collection, filter=f"id in {literal(keys[start:start + BATCH])}")

    def _wrapped(self, action: str):
        return wrapped(f"Milvus {shown(self.uri)} collection {self.collection}", action)
