"""How far one machine goes: build time, memory and search of an index of N clustered synthetic vectors.

    nice -n 10 python bench/index_scale.py --backend hnsw --n 100000
    nice -n 10 python bench/index_scale.py --backend hnsw --n 1000000 --max-seconds 900
    nice -n 10 python bench/index_scale.py --backend milvus --n 100000

Vectors: 1024-d float32, ``--clusters`` Gaussian clusters (real embeddings are clustered, uniform random
ones make HNSW look worse than it is). hnswlib: M=16, efConstruction=200, ef=128, as dagnn builds it.
Milvus: Milvus Lite through dagnn's MilvusIndex (HNSW M=16, efConstruction=200, ef=128). Memory is the
resident set growth over the build (VmRSS of this process and its children, so Milvus Lite's server
counts); ``--max-seconds`` stops adding after that long and reports the rate reached. Milvus indexes new rows
in the background after the flush, in this process: the bench states how slow searches are right after it
and how long the background work lasts (until the process idles while it waits), then measures searches.
Search: ``--queries`` held-out vectors, k=10, one query per call; top-10 recall against exact (numpy)
search. Prints one table row per run; run one configuration per process.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import OtherLoad, command_line  # noqa: E402


def _rss(pid) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0


def rss_mb() -> float:
    """Resident MB of this process and its children (Milvus Lite runs its server as a child process)."""
    me = str(os.getpid())
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        children.append(entry)
            except OSError:
                pass
    return _rss("self") + sum(_rss(c) for c in children)


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    """n unit vectors around ``clusters`` random centres (noise 0.6 of a centre's norm per vector)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 50000):
        m = min(50000, n - start)
        x = centres[rng.integers(clusters, size=m)] + 0.6 * rng.standard_normal((m, d)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top(data: np.ndarray, q: np.ndarray, k: int, n: int) -> np.ndarray:
    sims = q @ data[:n].T
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(sims, part, 1), 1), 1)


def settled(search, queries, limit: float, window: int = 10, pause: float = 5.0) -> tuple[float, float, list]:
    """Milvus builds the index of new rows in the background after a flush, inside this process, and
    searches are slow until it is done. Alternate a window of ``window`` searches with ``pause`` seconds of
    waiting until this process uses under a tenth of a core while it waits (the background work is over), or
    ``limit`` seconds pass. Returns (seconds until then, first window's median ms, [(seconds, median ms)])."""
    start, series = time.perf_counter(), []
    while time.perf_counter() - start < limit:
        times = []
        for v in queries[:window]:
            t = time.perf_counter()
            search(v)
            times.append((time.perf_counter() - t) * 1000)
        series.append((time.perf_counter() - start, statistics.median(times)))
        cpu = sum(os.times()[:2])
        time.sleep(pause)
        if sum(os.times()[:2]) - cpu < 0.1 * pause:
            break
    return time.perf_counter() - start, series[0][1], series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["hnsw", "milvus"], default="hnsw")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=1800)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load0, others = os.getloadavg()[0], OtherLoad()

    data = clustered(args.n + args.queries, args.dim, args.clusters, args.seed)
    q, data = data[args.n:], data[:args.n]
    base = rss_mb()
    chunk, added, start = 10000, 0, time.perf_counter()
    if args.backend == "hnsw":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=args.dim)
        index.init_index(max_elements=args.n, M=16, ef_construction=200)
        index.set_num_threads(args.threads)
        while added < args.n and time.perf_counter() - start < args.max_seconds:
            index.add_items(data[added:added + chunk], np.arange(added, min(added + chunk, args.n)))
            added = min(added + chunk, args.n)
        index.set_ef(128)

        def search(v):
            return index.knn_query(v[None], k=10)[0][0]
    else:
        from dagnn_runtime.indexes.milvus import MilvusIndex

        tmp = tempfile.mkdtemp(prefix="milvus-bench-")
        index = MilvusIndex.open(os.path.join(tmp, "bench.db"), modality="image", create=True,
                                 embedding_space="bench" * 8, dim=args.dim)
        while added < args.n and time.perf_counter() - start < args.max_seconds:
            ids = [str(i) for i in range(added, min(added + chunk, args.n))]
            index.add(data[added:added + len(ids)], ids)
            added += len(ids)
        index.save()

        def search(v):
            return [int(h.id) for h in index.search(v, k=10)[0]]
    build = time.perf_counter() - start
    settle = settled(search, q, args.max_seconds) if args.backend == "milvus" else None
    grown = rss_mb() - base
    for v in q[:10]:  # warm-up
        search(v)
    times, found = [], []
    for v in q:
        t = time.perf_counter()
        found.append(search(v))
        times.append((time.perf_counter() - t) * 1000)
    truth = exact_top(data, q, 10, added)
    recall = np.mean([len(set(map(int, f)) & set(t.tolist())) / 10 for f, t in zip(found, truth)])
    if settle is not None:
        series = ", ".join(f"{m:.0f} ms at {t:.0f} s" for t, m in settle[2])
        print(f"searches right after the last insert: median {settle[1]:.1f} ms; background work over "
              f"{settle[0]:.0f} s after it (window medians: {series})")
    print("| backend | vectors | build s | vectors/s | RSS growth MB | search ms median (min–max) | recall@10 |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.backend} | {added:,}{'' if added == args.n else f' of {args.n:,} (time box)'} | {build:.0f} | "
          f"{added / build:.0f} | {grown:.0f} | {statistics.median(times):.2f} ({min(times):.2f}–{max(times):.2f}) "
          f"| {recall:.3f} |")
    print(f"# {command_line()}")
    print(f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end (with this bench); other processes "
          f"used {others.cores():.2f} cores during the run")


if __name__ == "__main__":
    main()
