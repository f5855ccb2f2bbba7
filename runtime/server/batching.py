"""Dynamic batching: concurrent single-image requests share one onnxruntime call.

Each model call has a fixed cost (graph dispatch, thread wake-ups) that a batch pays once, so under load
it pays to gather the requests that arrive within a few milliseconds and run them together. ``workers``
threads run the model, one batch each: while they run, new requests queue up and form the next batch, so
the wait only applies when a worker is idle, and only for requests already on their way: a request whose
image is still being decoded is announced (``announce``), and an idle worker waits at most ``max_wait_ms``
for those, never for requests that may not come. A lone request runs at once.
How much batching gains depends on the model and the provider: see bench/serve_batching.py.

The batcher is plain threads and futures, so the engine's synchronous ``Searcher`` uses it through
``BatchingEncoder`` from the server's request threads: one query pipeline, batched or not.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

from ..errors import DagnnError, ImageInputError
from ..preprocess import load_image

log = logging.getLogger(__name__)
_STOP = object()


class BatcherClosed(DagnnError):
    """The service is shutting down: the request was not run (answered 503)."""


class Batcher:
    """``submit(pixels)`` → a future of that image's output row; ``run`` gets the stacked ``(n, ...)`` batch."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 16, max_wait_ms: float = 2.0,
                 workers: int = 1, observe: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_wait_ms < 0 or workers < 1:
            raise ValueError(f"max_batch and workers must be >= 1 and max_wait_ms >= 0, got {max_batch}, "
                             f"{workers}, {max_wait_ms}")
        self.max_batch, self.max_wait_ms, self.workers = int(max_batch), float(max_wait_ms), int(workers)
        self._run, self._observe = run, observe
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._gathering = threading.Lock()  # one worker gathers at a time; the others run their batches
        self._threads: list = []
        self._closed = False
        self._coming = 0  # images being decoded that will be submitted soon
        self._coming_lock = threading.Lock()

    def announce(self, n: int) -> None:
        """``n`` more images are being decoded and will be submitted (``submit(..., announced=True)``), or
        ``-n`` that no longer will (their decoding failed)."""
        with self._coming_lock:
            self._coming += n

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._work, name=f"dagnn-batch-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, item: np.ndarray, announced: bool = False) -> Future:
        if self._closed or not self._threads:
            raise BatcherClosed("the model worker is not running")
        future: Future = Future()
        self._queue.put((item, future))
        if announced:  # queued first, so that a gathering worker never sees it neither coming nor queued
            self.announce(-1)
        return future

    def _gather(self):
        first = self._queue.get()
        if first is _STOP:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait_ms / 1000
        while len(batch) < self.max_batch:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._coming:
                    break  # nobody else is on the way: run what there is
                try:  # short polls, so that the wait ends as soon as nobody is left on the way
                    entry = self._queue.get(timeout=min(remaining, 0.0005))
                except queue.Empty:
                    continue
            if entry is _STOP:
                self._queue.put(_STOP)  # for the next worker; this one runs what it has first
                break
            batch.append(entry)
        return [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]

    def _work(self) -> None:
        while True:
            with self._gathering:
                batch = self._gather()
            if batch is None:
                self._queue.put(_STOP)
                return
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list) -> None:
        start = time.perf_counter()
        try:
            out = self._run(np.stack([item for item, _ in batch]))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, who reports it
            for _, fut in batch:
                fut.set_exception(exc)
            return
        for row, (_, fut) in zip(out, batch):
            fut.set_result(row)
        if self._observe is not None:
            self._observe(len(batch), time.perf_counter() - start)

    def close(self) -> None:
        """Stop; running batches finish, requests still queued fail with ``BatcherClosed``."""
        self._closed = True
        self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is not _STOP and entry[1].set_running_or_notify_cancel():
                entry[1].set_exception(BatcherClosed("the service is shutting down"))


class BatchingEncoder:
    """The ``Searcher``'s encoder in a server: each image is decoded in the calling request thread and
    encoded in a shared batch; a text (a fraction of a millisecond) is encoded on the spot."""

    def __init__(self, model, batcher: Batcher):
        self.model, self.batcher = model, batcher

    def images(self, items) -> np.ndarray:
        futures = []
        self.batcher.announce(len(items))
        try:
            for i, item in enumerate(items):
                try:
                    pixels = load_image(item, self.model.image_size)
                except ImageInputError as exc:
                    raise exc if len(items) == 1 else ImageInputError(f"item {i}: {exc}") from exc
                futures.append(self.batcher.submit(pixels, announced=True))
        finally:
            self.batcher.announce(len(futures) - len(items))  # those that were never submitted
        rows = [f.result() for f in futures]
        return np.stack(rows) if rows else np.zeros((0, self.model.embedding_dim), np.float32)

    def texts(self, items) -> np.ndarray:
        return self.model.encode_texts(items)
