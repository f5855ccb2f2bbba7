"""Decoding images for the encoder in a small thread pool, one batch ahead of it.

Pillow releases the GIL while it decodes and resizes, so decoding threads run beside the encoder's
onnxruntime threads: while the caller encodes one batch, the next is already being decoded. At most two
batches of pixels are in memory.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Iterable, Sequence

import numpy as np

from .errors import ImageInputError, InputError
from .execution import usable_cores

_pool = None
_pool_lock = threading.Lock()


def decode_pool():
    """The process's decoding threads (as many as usable cores), made on first use."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="dagnn-decode")
    return _pool


class _Done:
    """A job run on the spot, with the ``result()`` of a future (so that one code path serves both)."""

    def __init__(self, fn, *args):
        self._args, self._fn = args, fn

    def result(self):
        return self._fn(*self._args)


def iter_pixels(items: Sequence, size: int, batch_size: int):
    """Decode ``items`` batch by batch → yields ``(positions, pixels, errors)``: the positions in ``items``
    that decoded, their uint8 ``(n, size, size, 3)`` batch, and ``(position, ImageInputError)`` for the
    others. A single item is decoded on the spot (a thread hand-off would only add latency)."""
    from .preprocess import load_image  # Pillow only when images are used

    pool = decode_pool() if len(items) > 1 else None
    starts = range(0, len(items), batch_size)

    def submit(start):
        chunk = range(start, min(start + batch_size, len(items)))
        if pool is None:
            return [(i, _Done(load_image, items[i], size)) for i in chunk]
        return [(i, pool.submit(load_image, items[i], size)) for i in chunk]

    pending = submit(starts[0]) if len(starts) else []
    for k in range(len(starts)):
        current, pending = pending, (submit(starts[k + 1]) if k + 1 < len(starts) else [])
        positions, arrays, errors = [], [], []
        for i, job in current:
            try:
                arrays.append(job.result())
                positions.append(i)
            except ImageInputError as exc:
                errors.append((i, exc))
        pixels = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), dtype=np.uint8)
        yield positions, pixels, errors


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
