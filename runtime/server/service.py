"""The service behind the routes: a ``Searcher`` plus dynamic batching, a decode pool and durable writes.

Route handlers parse and validate requests and render answers; everything they ask of the model and the
indexes goes through here, and all retrieval itself is the ``Searcher``'s and the indexes' (this module
only routes an image through the batcher first). No starlette here: it can be driven without HTTP.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_write
from ..constants import MODALITIES
from ..engine import distinct_indexes
from ..errors import DagnnError, InputError
from ..metrics import thresholds_to_json
from .batching import Batcher
from .errors import ApiError
from .writes import GroupCommit

log = logging.getLogger(__name__)



def hit_json(hit) -> dict:
    return {"id": hit.id, "score": round(float(hit.score), 6), "metadata": hit.metadata}


class Service:
    def __init__(self, searcher, *, uploads: Path, max_batch: int = 16, max_wait_ms: float = 2.0,
                 model_workers: int = 1, decode_workers: int = 2, observe_batch=None, refresh_s: float = 5.0):
        self.searcher, self.model, self.uploads = searcher, searcher.model, Path(uploads)
        self.batcher = Batcher(self.model.encode_pixels, max_batch=max_batch, max_wait_ms=max_wait_ms,
                               workers=model_workers, observe=observe_batch)
        # texts cost little to encode: batch only those that queue up while the encoder is busy (no wait)
        self.text_batcher = Batcher(self.model.encode_bow, max_batch=64, max_wait_ms=0)
        self._decode = ThreadPoolExecutor(decode_workers, thread_name_prefix="dagnn-decode")
        self._search = ThreadPoolExecutor(2, thread_name_prefix="dagnn-search")
        self._commit = GroupCommit()
        self._write_lock = asyncio.Lock()  # a change and a refresh never interleave
        self._refresh_s, self._refresher = refresh_s, None

    async def start(self) -> None:
        self.batcher.start()
        self.text_batcher.start()
        if self._refresh_s > 0:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name="dagnn-refresh")

    async def _refresh_loop(self) -> None:
        """See what other writers (``dagnn index add``, another server) saved: ``refresh`` every few seconds."""
        while True:
            await asyncio.sleep(self._refresh_s)
            for index in distinct_indexes(self.searcher.indexes):
                try:
                    async with self._write_lock:  # not during a change, and on the save thread: not during a save
                        await self._commit.run(index.refresh)
                except DagnnError as exc:
                    log.warning("cannot refresh index %s: %s", index.location, exc)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self.batcher.close()
        await self.text_batcher.close()
        await self._commit.close()
        self._decode.shutdown(wait=True)
        self._search.shutdown(wait=True)
        self.searcher.close()

    # ---- encoding -------------------------------------------------------------------------------------
    async def embed_image(self, data: bytes) -> np.ndarray:
        """Decode and resize in the pool (``ImageInputError`` for a bad image), encode in a shared batch."""
        pixels = await asyncio.get_running_loop().run_in_executor(self._decode, self.model.preprocess, [data])
        return await self.batcher.submit(pixels[0])

    async def embed_text(self, text: str) -> np.ndarray:
        """The bag of words (``InputError`` naming close tags when none is known), encoded in a shared batch.
        All onnxruntime calls run on the batchers' threads, so request threads never contend for it."""
        return await self.text_batcher.submit(self.model.bow([text])[0])

    async def _hits(self, index, vector: np.ndarray, k: int, labels) -> list:
        run = lambda: index.search(vector[None], k, labels=labels)[0]  # noqa: E731
        return [hit_json(h) for h in await asyncio.get_running_loop().run_in_executor(self._search, run)]

    # ---- search and tag -------------------------------------------------------------------------------
    async def search_image(self, data: bytes, *, target=None, k=10, labels=None) -> dict:
        start = time.perf_counter()
        target, index = self.searcher._index_for("image", target)  # the engine's target default and checks
        hits = await self._hits(index, await self.embed_image(data), k, labels)
        return {"target": target, "results": hits, "took_ms": _ms(start)}

    async def search_text(self, text: str, *, target=None, k=10, labels=None) -> dict:
        """As ``Searcher.search(text=...)``, with the encoding batched."""
        start = time.perf_counter()
        target, index = self.searcher._index_for("text", target)
        known, unknown = self.model.parse_text(text)
        hits = await self._hits(index, await self.embed_text(text), k, labels)
        return {"target": target, "query": ", ".join(known), "ignored_tags": unknown, "results": hits,
                "took_ms": _ms(start)}

    def label_scores(self, vector: np.ndarray) -> list:
        """Every label with its score and calibrated threshold, best first."""
        scores = self.model.score_labels(vector[None])[0]
        order = np.argsort(-scores, kind="stable")
        thresholds = thresholds_to_json(self.model.thresholds)
        return [{"label": self.model.labels[j], "score": round(float(scores[j]), 6), "threshold": thresholds[j],
                 "passes": bool(scores[j] >= self.model.thresholds[j])} for j in order]

    async def tag(self, data: bytes, top: int | None = None) -> dict:
        start = time.perf_counter()
        scores = self.label_scores(await self.embed_image(data))
        passing = [s["label"] for s in scores if s["passes"]]
        return {"labels": passing[:top] if top else passing, "scores": scores, "took_ms": _ms(start)}

    # ---- writes ---------------------------------------------------------------------------------------
    def _writable(self, modality: str):
        index = self.searcher.indexes.get(modality)
        if index is None or index.modality not in (None, modality):
            raise ApiError(404, "no_index", f"this server has no {modality} index to add {modality} items to")
        return index

    def _check_new(self, index, ids: list) -> None:
        taken = [i for i in ids if i in index]
        if taken or len(set(ids)) != len(ids):
            which = taken[0] if taken else next(i for i in ids if ids.count(i) > 1)
            raise ApiError(409, "duplicate_id", f"id {which!r} is already in the {index.modality or ''} index"
                           if taken else f"id {which!r} is given twice")

    async def add_images(self, items: list) -> dict:
        """``items``: (id, image bytes, metadata). Each file is kept under ``uploads`` (the only files the
        image route serves), its predicted labels go into its metadata for the label filter."""
        index = self._writable("image")
        ids = [item_id for item_id, _, _ in items]
        self._check_new(index, ids)
        vectors = await asyncio.gather(*(self.embed_image(data) for _, data, _ in items))
        metadata = []
        for (item_id, data, meta), vector in zip(items, vectors):
            path = await asyncio.to_thread(self._keep_upload, data)
            predicted = [s["label"] for s in self.label_scores(vector) if s["passes"]]
            metadata.append({**meta, "path": str(path), "predicted_labels": predicted})
        return await self._add(index, np.stack(vectors), ids, metadata)

    async def add_texts(self, items: list) -> dict:
        """``items``: (id, text, metadata); a text with no tag in the vocabulary is refused (422)."""
        index = self._writable("text")
        ids = [item_id for item_id, _, _ in items]
        self._check_new(index, ids)
        vectors = await asyncio.gather(*(self.embed_text(text) for _, text, _ in items))
        metadata = []
        for (_, text, meta), vector in zip(items, vectors):
            known, _ = self.model.parse_text(text)
            predicted = [s["label"] for s in self.label_scores(vector) if s["passes"]]
            metadata.append({**meta, "text": text, "tags": known, "predicted_labels": predicted})
        return await self._add(index, np.stack(vectors), ids, metadata)

    async def _add(self, index, vectors, ids, metadata) -> dict:
        try:
            async with self._write_lock:
                await asyncio.to_thread(index.add, vectors, ids, metadata)
        except InputError as exc:  # another request added one of these ids since _check_new
            if any(i in index for i in ids):
                raise ApiError(409, "duplicate_id", str(exc)) from exc
            raise
        await self._commit.durable(index)
        return {"added": ids, "modality": index.modality, "items": len(index)}

    async def remove(self, item_id: str) -> dict:
        """Remove ``item_id`` from every index that holds it (an image and its text share ids)."""
        holding = [ix for ix in distinct_indexes(self.searcher.indexes) if item_id in ix]
        if not holding:
            raise ApiError(404, "unknown_id", f"no item with id {item_id!r}")
        for index in holding:
            async with self._write_lock:
                await asyncio.to_thread(index.remove, [item_id])
            await self._commit.durable(index)
        return {"removed": item_id, "from": [ix.modality for ix in holding]}

    def _keep_upload(self, data: bytes) -> Path:
        """Store an upload once under its content hash (same bytes, same file), written atomically."""
        with Image.open(io.BytesIO(data)) as img:
            suffix = "." + (img.format or "img").lower().replace("jpeg", "jpg")
        self.uploads.mkdir(parents=True, exist_ok=True)
        path = self.uploads / (hashlib.sha256(data).hexdigest() + suffix)
        if not path.exists():
            atomic_write(path, lambda tmp: tmp.write_bytes(data))
        return path

    # ---- reading --------------------------------------------------------------------------------------
    def image_file(self, item_id: str) -> Path:
        """The file an image item was indexed from: only paths stored in the index, never one from a client."""
        index = self.searcher.indexes.get("image")
        if index is None or item_id not in index:
            raise ApiError(404, "unknown_id", f"no image item with id {item_id!r}")
        path = index.metadata(item_id).get("path")
        if not path or not Path(path).is_file():
            raise ApiError(404, "no_file", f"the image file of item {item_id!r} is not available")
        return Path(path)

    def labels(self) -> list:
        return [{"label": label, "threshold": t}
                for label, t in zip(self.model.labels, thresholds_to_json(self.model.thresholds))]

    def info(self) -> dict:
        manifest = self.model.manifest
        return {"model": {"bundle_digest": self.model.bundle_digest, "embedding_space": self.model.embedding_space,
                          "embedding_dim": self.model.embedding_dim,
                          "labels": len(self.model.labels), "vocabulary": len(self.model.vocab),
                          "name": manifest.get("model", {}).get("name"),
                          "variant": manifest.get("model", {}).get("variant"),
                          "providers": list(self.model.providers)},
                "indexes": {m: {"items": len(ix), "dim": ix.dim} for m, ix in self.searcher.indexes.items()
                            if m in MODALITIES},
                "batching": {"max_batch": self.batcher.max_batch, "max_wait_ms": self.batcher.max_wait_ms,
                             "workers": self.batcher.workers}}


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
