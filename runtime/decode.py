"""What counts as a list of images, and the threads that decode them (``preprocess.iter_pixels``).

Kept apart from ``preprocess``, which imports Pillow, so that a text query never imports it.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Iterable

import numpy as np

from .errors import InputError
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
