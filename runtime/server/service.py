"""The service behind the routes: the engine's ``Searcher`` with a batching encoder, the server's threads,
uploads and durable writes.

Route handlers parse and validate requests and render answers; searching, tagging and the records of new
items are the ``Searcher``'s (this module only runs it off the event loop and renders its results as
JSON). No starlette here: it can be driven without HTTP.

Threads, one policy: work under a millisecond (a text query: encode and search) runs on the event loop,
where a hand-over to a thread would cost more than the work; every other request's blocking work
(decoding, image searches, tagging, preparing a write, and a text query while a write holds the index)
runs on one pool of request threads, sized so that every model worker can fill a batch while others wait
(``request_threads``); the model runs on the batcher's workers; index saves on the group commit's thread.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from ..atomic import atomic_write
from ..constants import MODALITIES
from ..engine import distinct_indexes
from ..errors import DagnnError, InputError
from ..execution import usable_cores
from ..metrics import thresholds_to_json
from .batching import Batcher, BatchingEncoder
from . import files
from .errors import ApiError
from .files import NotServed, Photo
from .writes import GroupCommit

log = logging.getLogger(__name__)


def request_threads(max_batch: int, model_workers: int) -> int:
    """Threads for requests' blocking work: enough waiting requests to fill every model worker's batch,
    plus one per core for the work that does not wait on the model."""
    return max_batch * model_workers + usable_cores()


def hit_json(hit) -> dict:
    return {"id": hit.id, "score": round(float(hit.score), 6), "metadata": hit.metadata}


def label_json(score) -> dict:
    return {"label": score.label, "score": round(score.score, 6), "threshold": score.threshold,
            "passes": score.passes}


class Service:
    def __init__(self, searcher, *, uploads: Path, max_batch: int = 16, max_wait_ms: float = 2.0,
                 model_workers: int = 1, observe_batch=None, refresh_s: float = 5.0):
        self.searcher, self.model, self.uploads = searcher, searcher.model, Path(uploads)
        self.batcher = Batcher(self.model.encode_pixels, max_batch=max_batch, max_wait_ms=max_wait_ms,
                               workers=model_workers, observe=observe_batch)
        searcher.encoder = BatchingEncoder(self.model, self.batcher)
        self._requests = ThreadPoolExecutor(request_threads(max_batch, model_workers),
                                            thread_name_prefix="dagnn-request")
        self._commit = GroupCommit()
        self._write_lock = asyncio.Lock()  # a change and a refresh never interleave
        self._refresh_s, self._refresher = refresh_s, None
        self._roots = {}  # id(index) -> (photo roots, when read): see _read_photo

    async def start(self) -> None:
        self.batcher.start()
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
        await self._commit.close()
        self._requests.shutdown(wait=True)
        await asyncio.to_thread(self.batcher.close)
        self.searcher.close()

    async def _call(self, fn, *args, **kwargs):
        """``fn`` on a request thread (see the module's thread policy)."""
        return await asyncio.get_running_loop().run_in_executor(self._requests,
                                                                functools.partial(fn, *args, **kwargs))

    # ---- search and tag -------------------------------------------------------------------------------
    async def search(self, *, image: bytes | None = None, text: str | None = None, target=None, k=10,
                     labels=None) -> dict:
        if text is not None and not (self._write_lock.locked() or self._commit.busy):
            # a text query is a fraction of a millisecond of work: answered on the event loop, without the
            # hand-over to a request thread that cost more than the query (docs/serve.md); during a write,
            # which holds the index, it waits on a request thread instead of holding up the loop
            result = self.searcher.search(text=text, target=target, k=k, labels=labels)
        else:
            result = await self._call(self.searcher.search, image=image, text=text, target=target, k=k,
                                      labels=labels)
        answer = {"target": result.target, "results": [hit_json(h) for h in result.hits],
                  "took_ms": round(result.took_ms, 2)}
        if text is not None:
            answer.update(query=result.query, ignored_tags=result.ignored_tags)
        return answer

    async def tag(self, data: bytes, top: int | None = None) -> dict:
        start = time.perf_counter()
        result = (await self._call(self.searcher.tag, [data], top=top or None))[0]
        return {"labels": [s.label for s in result.labels], "scores": [label_json(s) for s in result.scores],
                "took_ms": round((time.perf_counter() - start) * 1e3, 2)}

    # ---- writes ---------------------------------------------------------------------------------------
    def _writable(self, modality: str):
        try:
            return self.searcher.index(modality)
        except InputError:
            raise ApiError(404, "no_index", f"this server has no {modality} index to add {modality} items to")

    def _check_new(self, index, ids: list) -> None:
        taken = [i for i in ids if i in index]
        if taken or len(set(ids)) != len(ids):
            which = taken[0] if taken else next(i for i in ids if ids.count(i) > 1)
            raise ApiError(409, "duplicate_id", f"id {which!r} is already in the {index.modality or ''} index"
                           if taken else f"id {which!r} is given twice")

    async def add_images(self, items: list) -> dict:
        """``items``: (id, image bytes, metadata). Each file is kept under ``uploads`` (the only files the
        image route serves); the records are the engine's, as for every other way in."""
        index = self._writable("image")
        ids = [item_id for item_id, _, _ in items]
        self._check_new(index, ids)
        vectors, records = await self._call(self.searcher.new_items, "image", [data for _, data, _ in items],
                                            [meta for _, _, meta in items])
        for (_, data, _), record in zip(items, records):
            record["path"] = str(await self._call(self._keep_upload, data))
        answer = await self._add(index, vectors, ids, records)
        await self._call(index.record_roots, [self.uploads])
        return answer

    async def add_texts(self, items: list) -> dict:
        """``items``: (id, text, metadata); a text with no tag in the vocabulary is refused (422)."""
        index = self._writable("text")
        ids = [item_id for item_id, _, _ in items]
        self._check_new(index, ids)
        vectors, records = await self._call(self.searcher.new_items, "text", [text for _, text, _ in items],
                                            [meta for _, _, meta in items])
        return await self._add(index, vectors, ids, records)

    async def _add(self, index, vectors, ids, records) -> dict:
        try:
            async with self._write_lock:
                await self._call(index.add, vectors, ids, records)
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
                await self._call(index.remove, [item_id])
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
    async def image_file(self, item_id: str) -> Photo:
        """The photo an image item was indexed from: only a path stored in the index, never one from a client,
        and only a regular file inside the index's photo folders, read through the descriptor that was
        checked (``files.read_photo``); 404 otherwise, 503 when the process is out of descriptors."""
        index = self.searcher.indexes.get("image")
        unknown = ApiError(404, "unknown_id", f"no image item with id {item_id!r}")
        if index is None:
            raise unknown
        try:  # one look-up: an id the index does not hold is refused by ``metadata`` itself
            path = (await self._call(index.metadata, item_id)).get("path")
        except InputError:
            raise unknown from None
        unavailable = ApiError(404, "no_file", f"the image file of item {item_id!r} is not available")
        if not isinstance(path, str) or not path:
            raise unavailable
        try:
            return await self._call(self._read_photo, index, path)
        except NotServed as exc:
            log.warning("not serving the photo of item %r (%s): %s", item_id, path, exc.reason)
            if exc.busy:
                raise ApiError(503, "unavailable", f"cannot open the image file of item {item_id!r} now: retry "
                               "shortly", {"Retry-After": "1"}) from None
            raise unavailable from None

    def _read_photo(self, index, path: str) -> Photo:
        """``files.read_photo`` inside the index's recorded roots and the uploads folder (an index that
        records none: inside the item's own folder). The roots are re-read (``info()``) at most every few
        seconds, and soon for a path outside the known ones (another writer may have added a folder)."""
        now = time.monotonic()
        recorded, at = self._roots.get(id(index), (None, 0.0))
        outside = recorded is not None and files.root_of(files.normal(path), recorded) is None
        if recorded is None or now - at > 5 or (outside and now - at > 0.5):
            recorded = [files.normal(r) for r in index.info().get("roots") or []]
            self._roots[id(index)] = recorded, now
        return files.read_photo(path, recorded + [files.normal(str(self.uploads))] if recorded else [])

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
