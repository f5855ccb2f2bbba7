"""What counts as a list of images, the threads that decode them (``preprocess.iter_pixels``) and the
memory all of the process's decodes may hold at once (``decode_memory``; ``reserve_decoding_memory`` also
hands a big decode's freed memory back to the system).

Kept apart from ``preprocess``, which imports Pillow, so that a text query never imports it.
"""
from __future__ import annotations

import collections
import os
import sys
import threading
from contextlib import ExitStack, contextmanager
from typing import Iterable

import numpy as np

from .errors import InputError
from .execution import usable_cores

# Estimated bytes that the images being decoded may hold at once, all threads of the process together
# (``image_checks`` estimates each image from its header): 16 uploads of a 64-megapixel image then decode one
# after the other instead of needing 16 times the memory. One image over the whole budget runs alone.
DECODE_MEMORY = 512 << 20
_TRIM_FROM = 16 << 20            # after a decode estimated at this many bytes or more, give memory back

_pool = None
_pool_lock = threading.Lock()
_budget = None
_malloc_trim = None


def decode_pool():
    """The process's decoding threads (as many as usable cores), made on first use."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="dagnn-decode")
    return _pool


class MemoryBudget:
    """At most ``limit`` bytes reserved at once, by all threads together. ``reserve(n)`` waits for its turn
    (first come, first served, so a big image is not starved by small ones) and for room; a request larger
    than the whole budget waits until nothing else is reserved and then runs alone."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.in_use = 0
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()

    @contextmanager
    def reserve(self, nbytes: int):
        nbytes = max(0, int(nbytes))
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or (self.in_use and self.in_use + nbytes > self.limit):
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: give up the place in the queue
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self.in_use += nbytes
            self._cond.notify_all()  # the next in line may fit beside this one
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= nbytes
                self._cond.notify_all()


def decode_memory() -> MemoryBudget:
    """The process's budget of decoding memory (``DECODE_MEMORY`` bytes), made on first use."""
    global _budget
    if _budget is None:
        with _pool_lock:
            if _budget is None:
                _budget = MemoryBudget(DECODE_MEMORY)
    return _budget


def _give_back_memory() -> None:
    """Return freed memory to the system (glibc's ``malloc_trim``; elsewhere nothing). glibc keeps what a
    thread frees in that thread's own arena: a server's request threads decoding big images one after the
    other would each keep the few hundred MB of the last one (16 uploads of a 64-megapixel icon: 5.3 GB)."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes

        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except Exception:  # noqa: BLE001 - not glibc (musl, macOS, Windows): nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def reserve_decoding_memory(held: ExitStack, cost: int) -> None:
    """Reserve ``cost`` bytes of the process's decoding memory until ``held`` closes; a big decode gives
    its memory back to the system before its reservation ends (``held`` unwinds last in, first out)."""
    held.enter_context(decode_memory().reserve(cost))
    if cost >= _TRIM_FROM:
        held.callback(_give_back_memory)


def _is_pil_image(item) -> bool:
    pil = sys.modules.get("PIL.Image")  # not imported yet: then nothing can be a PIL image
    return pil is not None and isinstance(item, pil.Image)


def image_list(items) -> list:
    """A single path/bytes/PIL image/(H, W, 3) array counts as a list of one; a 4-D uint8 array is a batch."""
    if isinstance(items, (str, os.PathLike, bytes, bytearray)) or _is_pil_image(items):
        return [items]
    if isinstance(items, np.ndarray):
        if items.ndim == 4:
            return list(items)
        return [items]
    if isinstance(items, Iterable):
        return list(items)
    raise InputError(f"images must be a path, bytes, PIL image, uint8 array or a list of them, "
                     f"got {type(items).__name__}")
