"""Group commit: a write is acknowledged only once ``index.save()`` ran after it, and concurrent writers
share one save.

Depending on the backend, a save may be cheap (a store that commits every change writes a checkpoint
only when due) or rewrite files; saving once per write would then make writers queue behind each other's
saves. Writers that arrive while a save runs wait for the next one, which covers all of them.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(self):
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dagnn-save")
        self._waiting: dict = {}   # id(index) -> (index, future resolved once a save after the change ends)
        self._saver: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        """Whether a save is running (it holds the index's lock: a search would wait for it)."""
        return self._saver is not None and not self._saver.done()

    async def durable(self, index) -> None:
        """Return once ``index.save()`` has run to completion after the caller's change was made."""
        key = id(index)
        if key not in self._waiting:
            self._waiting[key] = (index, asyncio.get_running_loop().create_future())
        future = self._waiting[key][1]
        if self._saver is None or self._saver.done():
            self._saver = asyncio.get_running_loop().create_task(self._save_all(), name="dagnn-save")
        await asyncio.shield(future)

    async def _save_all(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            for index, future in batch.values():
                try:
                    await loop.run_in_executor(self._executor, index.save)
                except Exception as exc:  # noqa: BLE001 - every writer waiting on this save is told
                    log.error("saving index %s failed", getattr(index, "location", "?"), exc_info=exc)
                    future.set_exception(exc)
                else:
                    future.set_result(None)

    async def run(self, fn):
        """Run ``fn`` on the save thread: it never overlaps a save (e.g. ``index.refresh``)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def close(self) -> None:
        if self._saver is not None:
            await self._saver
        self._executor.shutdown(wait=True)
