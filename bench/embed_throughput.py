"""Embedding throughput: ``--engine local`` (one process) against ``--engine ray`` (Ray Data actor pool).

    nice -n 10 python bench/embed_throughput.py --bundle BUNDLE --images DIR --n 600 --rounds 3

Each round runs local then Ray (alternating, each into a fresh folder, so both see the same page cache):
local = one process, onnxruntime with ``--threads`` threads; Ray = ``--workers`` actors with one thread
each, in a local Ray started once before the rounds (its start-up time is printed apart; actor start-up
is inside each Ray run, as it is for a user). A first untimed run of each warms up. Prints items/s,
median (min–max) over the rounds.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the local engine")
    ap.add_argument("--shard-size", type=int, default=100)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]

    import ray

    import dagnn_runtime as dr
    from dagnn_runtime.embed import embed, items_from_images
    from dagnn_runtime.embed.ray_engine import embed_ray

    items = sorted(items_from_images(args.images), key=lambda it: it.id)[:args.n]
    local_model = dr.load(args.bundle, providers="cpu", threads=args.threads)
    t = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level=logging.WARNING)
    ray_start = time.perf_counter() - t
    tmp = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    rates: dict = {"local": [], "ray": []}

    def run(engine: str, name: str) -> float:
        out = tmp / name
        t = time.perf_counter()
        if engine == "local":
            embed(local_model, items, out, shard_size=args.shard_size)
        else:
            embed_ray(args.bundle, local_model, items, out, shard_size=args.shard_size, workers=args.workers)
        return len(items) / (time.perf_counter() - t)

    try:
        run("local", "warm-local")
        run("ray", "warm-ray")
        for r in range(args.rounds):
            for engine in ("local", "ray"):
                rates[engine].append(run(engine, f"{engine}-{r}"))
    finally:
        ray.shutdown()
    print(f"{len(items)} images of {args.images}, bundle {Path(args.bundle).name} "
          f"({local_model.image_size}px, d={local_model.embedding_dim}), {args.rounds} rounds; "
          f"Ray start-up {ray_start:.1f} s (not counted)")
    print("| engine | items/s median (min–max) |")
    print("|---|---|")
    print(f"| local, 1 process, {args.threads} onnxruntime threads | {statistics.median(rates['local']):.1f} "
          f"({min(rates['local']):.1f}–{max(rates['local']):.1f}) |")
    print(f"| ray, {args.workers} actors x 1 thread | {statistics.median(rates['ray']):.1f} "
          f"({min(rates['ray']):.1f}–{max(rates['ray']):.1f}) |")
    print(f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end (with this bench and its Ray)")


if __name__ == "__main__":
    main()
