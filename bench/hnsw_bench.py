"""HNSW recall and speed against exact search on synthetic vectors (the index the runtime serves from).

    python bench/hnsw_bench.py [--items 100000] [--dim 1024] [--queries 500] [--data clustered] [--ef 32 64 128 256]

Prints, per ef, recall@10 against exact search and queries/s as a multiple of exact search's; the
target is recall >= 0.99 at >= 20x exact search on >= 100k items.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # single-query exact search is a matrix-vector product

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import check_load, command_line, load_average  # noqa: E402


def recall(approx_scores, exact_scores, tol=1e-5):
    """recall@k allowing for ties: a result counts when it scores at least the exact k-th best (texts with
    identical tag sets have identical embeddings, so *which* of the tied items is returned is arbitrary)."""
    approx_scores, exact_scores = np.atleast_2d(approx_scores), np.atleast_2d(exact_scores)
    kth = exact_scores[:, -1:]
    return float(np.mean((approx_scores >= kth - tol).sum(1) / exact_scores.shape[1]))


def scores_of(hits):
    return np.array([[h.score for h in row] for row in hits], dtype=np.float32)


def synthetic_vectors(kind, items, queries, dim, seed=2):
    """Random database and query vectors. ``gaussian``: i.i.d. normal, the worst case for any graph index
    (in 1024-d all points are nearly equidistant, so "nearest" is barely defined); ``clustered``: normal
    noise around 256 random centres, like embeddings of a labelled collection; ``lowrank``: a 32-d latent
    normal projected to ``dim`` plus noise (intrinsic dimension 32)."""
    rng = np.random.default_rng(seed)
    n = items + queries
    if kind == "clustered":
        centres = rng.standard_normal((256, dim)).astype(np.float32)
        x = centres[rng.integers(0, 256, n)] + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    elif kind == "lowrank":
        latent = 32
        x = rng.standard_normal((n, latent), dtype=np.float32) @ rng.standard_normal((latent, dim), dtype=np.float32)
        x += 0.1 * np.sqrt(latent) * rng.standard_normal((n, dim), dtype=np.float32)
    else:
        x = rng.standard_normal((n, dim), dtype=np.float32)
    return x[:items], x[items:]


def bench_hnsw(items, dim, queries, k, threads, efs, data_kind):
    from dagnn_runtime.indexes.hnsw import HnswIndex

    v, q = synthetic_vectors(data_kind, items, queries, dim)
    index = HnswIndex(dim, "bench", capacity=items, M=16, ef_construction=200)
    index._graph.set_num_threads(threads)
    t = time.perf_counter()
    for start in range(0, items, 20000):
        index.add(v[start:start + 20000], [str(i) for i in range(start, min(start + 20000, items))])
    build_s = time.perf_counter() - t
    del v
    index.search(q[:1], k=k, exact=True)  # builds the exact search's vector cache outside the timing
    t = time.perf_counter()
    exact = np.concatenate([scores_of(index.search(q[i], k=k, exact=True)) for i in range(len(q))])
    exact_qps = len(q) / (time.perf_counter() - t)
    rows = []
    for ef in efs:
        index.search(q[:5], k=k, ef=ef)
        t = time.perf_counter()
        got = np.concatenate([scores_of(index.search(q[i], k=k, ef=ef)) for i in range(len(q))])
        qps = len(q) / (time.perf_counter() - t)
        rows.append({"ef": ef, "recall": recall(got, exact), "qps": qps, "speedup": qps / exact_qps})
    return {"items": items, "dim": dim, "queries": len(q), "data": data_kind, "build_s": build_s,
            "exact_qps": exact_qps, "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--data", choices=["clustered", "lowrank", "gaussian"], default="clustered")
    ap.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--load-limit", type=float, default=1.0)
    ap.add_argument("--allow-load", action="store_true")
    args = ap.parse_args(argv)
    load0 = check_load(args.load_limit, args.allow_load)
    h = bench_hnsw(args.items, args.dim, args.queries, args.k, args.threads, args.ef, args.data)
    load1 = load_average()
    print(f"$ {command_line()}\nload average {load0:.2f} at start, {load1:.2f} at end; "
          f"{h['items']} x {h['dim']} {h['data']} vectors, build {h['build_s']:.1f} s (M=16, efC=200); "
          f"exact search {h['exact_qps']:.1f} queries/s")
    for x in h["rows"]:
        ok = x["recall"] >= 0.99 and x["speedup"] >= 20 and h["items"] >= 100000
        print(f"ef {x['ef']:>4}: recall@10 {x['recall']:.4f}  {x['qps']:.0f} queries/s  {x['speedup']:.1f}x exact"
              f"  {'met' if ok else 'missed'} (recall >= 0.99 at >= 20x)")


if __name__ == "__main__":
    main()
