"""Texts as the format-2 text graph takes them: per text the vocabulary rows of its tags, padded.

The graph gathers one hidden-width row per id slot, so a batch costs (texts x longest text) rows: texts
are sorted by length before padding, and a chunk is capped in slots to bound that intermediate.
"""
from __future__ import annotations

import numpy as np

# At most this many padded tag slots per run of the text graph (2048 x 4096 floats = 32 MiB).
MAX_TAG_SLOTS = 2048


def tag_id_batches(ids: list, pad: int, batch_size: int = 256, max_slots: int | None = None):
    """Tag-id lists → yields ``(rows, chunk)``: positions in ``ids`` and their int64 ``(len(rows), longest)``
    matrix padded with ``pad`` (the vocabulary size). A chunk holds at most ``batch_size`` texts and
    ``max_slots`` (default ``MAX_TAG_SLOTS``) id slots."""
    if len(ids) == 1:  # one query: nothing to sort, chunk or pad (a per-query cost next to a 0.2 ms graph)
        yield np.zeros(1, dtype=np.int64), np.asarray([ids[0] if len(ids[0]) else [pad]], dtype=np.int64)
        return
    max_slots = MAX_TAG_SLOTS if max_slots is None else max_slots
    lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and stop - start < batch_size \
                and (stop + 1 - start) * max(1, lengths[order[stop]]) <= max_slots:
            stop += 1
        rows = order[start:stop]
        chunk = np.full((len(rows), max(1, int(lengths[rows[-1]]))), pad, dtype=np.int64)
        for k, r in enumerate(rows):
            chunk[k, :lengths[r]] = ids[r]
        yield rows, chunk
        start = stop
