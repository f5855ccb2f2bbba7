"""A writer process for the index store's concurrency and crash tests (and bench/index_writers.py).

    python tests/index_writer.py FOLDER add PREFIX COUNT [BATCH]   add PREFIX0.. in batches; print each id
    python tests/index_writer.py FOLDER remove ID...                remove ids one at a time; print each id

An id is printed (and flushed) only after the call that wrote it returned: it is acknowledged. A writer
started again after a kill resumes: it skips ids already added (or already removed). Vectors are derived
from the id, so any process can recompute what an item must hold.
"""
import hashlib
import sys

import numpy as np

from dagnn_runtime.indexes.hnsw import HnswIndex
from dagnn_runtime.indexes.store_file import is_store

DIM = 8
SPACE = "s" * 64
META = {"dim": DIM, "embedding_space": SPACE, "modality": "image"}
CHECKPOINT_MIN = 40  # small, so that kills also land while a graph checkpoint is being written


def vector_of(item_id: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def open_writer_index(folder):
    """The index at ``folder``, or a new one there (created by its first add; concurrent creators agree)."""
    if is_store(folder):
        index = HnswIndex.load(folder)
    else:
        index = HnswIndex(DIM, SPACE, modality="image", M=8, ef_construction=40, location=folder)
    index.checkpoint_min = CHECKPOINT_MIN
    return index


def add_ids(index, ids) -> None:
    index.add(np.stack([vector_of(i) for i in ids]), list(ids), [{"n": i} for i in ids])


def present(index, ids) -> list:
    index.refresh()
    return [i for i in ids if i in index]


def main(argv) -> int:
    folder, action, *args = argv
    index = open_writer_index(folder)
    try:
        if action == "add":
            prefix, count = args[0], int(args[1])
            batch = int(args[2]) if len(args) > 2 else 1
            for start in range(0, count, batch):
                ids = [f"{prefix}{i}" for i in range(start, min(start + batch, count))]
                have = set(present(index, ids))
                ids = [i for i in ids if i not in have]
                if ids:
                    add_ids(index, ids)
                    print("\n".join(ids), flush=True)
        elif action == "remove":
            for item_id in present(index, args):
                index.remove([item_id])
                print(item_id, flush=True)
        else:
            raise SystemExit(f"unknown action {action!r}")
    finally:
        index.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
