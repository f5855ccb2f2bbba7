"""Dynamic batching: concurrent single-image requests share one onnxruntime call.

Each model call has a fixed cost (graph dispatch, thread wake-ups) that a batch pays once, so under load
it pays to gather the requests that arrive within a few milliseconds and run them together. ``workers``
threads run the model, one batch each: while they run, new requests queue up and form the next batch, so
the wait only applies when a worker is idle. A lone request waits at most ``max_wait_ms`` for company.
How much batching gains depends on the model and the provider: see bench/serve_batching.py.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The service is shutting down: the request was not run."""


class Batcher:
    """``await submit(pixels)`` → that image's output row; ``run`` gets the stacked ``(n, ...)`` batch."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 16, max_wait_ms: float = 2.0,
                 workers: int = 1, observe: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_wait_ms < 0 or workers < 1:
            raise ValueError(f"max_batch and workers must be >= 1 and max_wait_ms >= 0, got {max_batch}, "
                             f"{workers}, {max_wait_ms}")
        self.max_batch, self.max_wait_ms, self.workers = int(max_batch), float(max_wait_ms), int(workers)
        self._run, self._observe = run, observe
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._running: set = set()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="dagnn-batch")

    def start(self) -> None:
        """Start the gathering loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.workers)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dagnn-batcher")

    async def submit(self, item: np.ndarray) -> np.ndarray:
        if self._queue is None or self._task is None or self._task.done():
            raise BatcherClosed("the model worker is not running")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _gather(self) -> list:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_ms / 1000
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
            except asyncio.CancelledError:
                _fail(batch, BatcherClosed("the service is shutting down"))
                raise
        return [(item, fut) for item, fut in batch if not fut.done()]  # callers that gave up are dropped

    async def _loop(self) -> None:
        while True:
            await self._slots.acquire()  # a worker is free: gather its batch
            batch = await self._gather()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run_batch(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_batch(self, batch: list) -> None:
        start = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, np.stack([item for item, _ in batch]))
        except asyncio.CancelledError:
            _fail(batch, BatcherClosed("the service is shutting down"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, who reports it
            _fail(batch, exc)
            return
        finally:
            self._slots.release()
        for row, (_, fut) in zip(out, batch):
            if not fut.done():
                fut.set_result(row)
        if self._observe is not None:
            self._observe(len(batch), time.perf_counter() - start)

    async def close(self) -> None:
        """Stop gathering; requests still queued fail with ``BatcherClosed``; running batches finish."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():
            _fail([self._queue.get_nowait()], BatcherClosed("the service is shutting down"))
        self._executor.shutdown(wait=True)


def _fail(batch: list, exc: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
