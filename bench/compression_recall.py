"""What cheaper storage costs in retrieval quality, on real embeddings: top-10 against exact fp32 search.

    nice -n 10 python bench/compression_recall.py --embeddings EMB/            # dagnn embed output
    nice -n 10 python bench/compression_recall.py --embeddings feats.npz --key features

``--queries`` items (seeded) are held out as queries; the rest is the collection. Exact cosine top-10 over
fp32 is the truth. Rows: hnswlib as dagnn builds it (M=16, efConstruction=200, ef=128), Milvus Lite through
dagnn's MilvusIndex (HNSW, same parameters), and exact search over vectors stored as float16, as int8
(per-dimension min/max scalar quantisation) and after PCA to ``--pca`` dimensions (fitted on the
collection). "position agreement": share of the 10 ranked positions holding the same id as exact search;
"recall@10": share of the exact top-10 found in any position. Prints a table.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def load(path: str, key: str | None) -> np.ndarray:
    p = Path(path)
    if p.is_dir():
        from dagnn_runtime.embed import read_embeddings

        return np.vstack([b.vectors for b in read_embeddings(p)])
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return np.asarray(z[key or z.files[0]], dtype=np.float32)
    return np.asarray(np.load(p, allow_pickle=False), dtype=np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def top10(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.argsort(-(q @ base.T), axis=1, kind="stable")[:, :10]


def scores(found, truth) -> tuple[float, float]:
    found, truth = np.asarray(found), np.asarray(truth)
    position = float(np.mean(found == truth))
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())]))
    return position, recall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embeddings", required=True, help="dagnn embed folder, .npy or .npz")
    ap.add_argument("--key", default=None, help="array name inside an .npz")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--pca", type=int, default=256)
    ap.add_argument("--no-milvus", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    x = unit(load(args.embeddings, args.key).astype(np.float32))
    rng = np.random.default_rng(args.seed)
    qi = rng.choice(len(x), args.queries, replace=False)
    q, base = x[qi], np.delete(x, qi, axis=0)
    n, d = base.shape
    truth = top10(base, q)
    rows = []

    import hnswlib
    t = time.perf_counter()
    graph = hnswlib.Index(space="ip", dim=d)
    graph.init_index(max_elements=n, M=16, ef_construction=200)
    graph.add_items(base, np.arange(n))
    graph.set_ef(128)
    found = graph.knn_query(q, k=10)[0]
    rows.append(("hnswlib fp32 HNSW (dagnn default)", 4 * d, *scores(found, truth), time.perf_counter() - t))

    if not args.no_milvus:
        from dagnn_runtime.indexes.milvus import MilvusIndex
        t = time.perf_counter()
        index = MilvusIndex.open(os.path.join(tempfile.mkdtemp(prefix="recall-"), "r.db"), modality="image",
                                 create=True, embedding_space="recall" * 8, dim=d)
        for s in range(0, n, 5000):
            index.add(base[s:s + 5000], [str(i) for i in range(s, min(s + 5000, n))])
        index.save()
        found = [[int(h.id) for h in row] for row in index.search(q, k=10)]
        rows.append(("Milvus Lite HNSW (MilvusIndex)", 4 * d, *scores(found, truth), time.perf_counter() - t))
        index.close()

    half = base.astype(np.float16).astype(np.float32)
    rows.append(("exact over float16 storage", 2 * d, *scores(top10(half, q), truth), 0.0))
    lo, hi = base.min(0), base.max(0)
    step = np.where(hi > lo, (hi - lo) / 255, 1.0)
    codes = np.round((base - lo) / step).astype(np.uint8)
    rows.append(("exact over int8 scalar quantisation", d, *scores(top10(codes * step + lo, q), truth), 0.0))
    mean = base.mean(0)
    _, _, vt = np.linalg.svd(base - mean, full_matrices=False)
    proj = vt[:args.pca].T
    rows.append((f"exact after PCA to {args.pca}-d", 4 * args.pca,
                 *scores(top10(unit((base - mean) @ proj), unit((q - mean) @ proj)), truth), 0.0))

    print(f"{n:,} items of {d}-d from {Path(args.embeddings).name}, {args.queries} held-out queries, seed {args.seed}")
    print("| storage / search | bytes per vector | position agreement | recall@10 | build+search s |")
    print("|---|---|---|---|---|")
    for name, size, pos, rec, secs in rows:
        print(f"| {name} | {size} | {pos:.3f} | {rec:.3f} | {secs:.0f} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
