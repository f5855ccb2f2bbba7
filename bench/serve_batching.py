"""What dynamic batching gains: image search with batching on vs one image per model call.

    python bench/serve_batching.py --bundle B --index I --photos DIR [--requests 400] [--concurrency 32] [--rounds 5]

Two ``dagnn serve`` processes on 127.0.0.1 with the same bundle, index and threads: A runs every image
alone (``--max-batch 1``), B gathers up to ``--max-batch`` images for at most ``--max-wait-ms``. Both are
warmed up, then measured in alternating rounds (A B, B A, ...) so that both see the same machine load;
the table gives medians with the min–max spread over rounds. A first table times the model alone
(``encode_pixels``, ms per image by batch size, alternating sizes) to show where any gain comes from.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import OtherLoad  # noqa: E402
from serve_load import Load, load_line, load_photos, run_phase, start_server, stop_server, summarise  # noqa: E402


async def measure(url: str, photos: list, requests: int, concurrency: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return summarise(*await run_phase(Load(client, photos, ["sky"]), ["image_search"] * requests, concurrency))["all"]


def model_only(bundle, photos: list, threads, rounds: int, sizes=(1, 4, 16)) -> dict:
    """ms per image of ``encode_pixels`` by batch size, sizes alternating within each round."""
    import time

    import dagnn_runtime as dr
    from dagnn_runtime.preprocess import load_batch

    model = dr.load(bundle, threads=threads)
    pixels = load_batch(photos[:32], model.image_size)
    model.encode_pixels(pixels[:16])  # warm-up
    times = {b: [] for b in sizes}
    for _ in range(rounds):
        for b in sizes:
            start = time.perf_counter()
            for s in range(0, 32, b):
                model.encode_pixels(pixels[s:s + b])
            times[b].append((time.perf_counter() - start) * 1000 / 32)
    return times


def spread(values: list, fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=None, help="Inference threads of both servers.")
    ap.add_argument("--model-workers", type=int, default=1, help="Batches run at once, both servers.")
    args = ap.parse_args()
    print(f"start: {load_line()}\ncommand: {' '.join(sys.argv)}")
    others = OtherLoad()
    photos = load_photos(Path(args.photos), 200)
    print(f"\nmodel alone (encode_pixels, threads {args.threads or 'default'}), ms per image, median [min–max]")
    for b, t in model_only(args.bundle, photos, args.threads, args.rounds).items():
        print(f"  batch {b:>2}: {spread(t)}")
    threads = ["--threads", str(args.threads)] if args.threads else []
    threads += ["--model-workers", str(args.model_workers)]
    variants = {"one by one (--max-batch 1)": ["--max-batch", "1", *threads],
                f"batched (--max-batch {args.max_batch}, --max-wait-ms {args.max_wait_ms:g})":
                    ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), *threads]}
    servers = {name: start_server(args.bundle, args.index, *extra) for name, extra in variants.items()}
    try:
        for _, url in servers.values():  # warm-up
            asyncio.run(measure(url, photos, 64, 8))
        rows = {name: [] for name in variants}
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                rows[name].append(asyncio.run(measure(servers[name][1], photos, args.requests, args.concurrency)))
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    print(f"\nimage search, {args.requests} requests at concurrency {args.concurrency}, {args.rounds} rounds "
          "(median [min–max])")
    print(f"{'variant':<44} {'q/s':>22} {'p50 ms':>22} {'p99 ms':>22} {'errors':>6}")
    for name, runs in rows.items():
        print(f"{name:<44} {spread([x['qps'] for x in runs]):>22} {spread([x['p50'] for x in runs]):>22} "
              f"{spread([x['p99'] for x in runs]):>22} {sum(x['errors'] for x in runs):>6}")
    a, b = (statistics.median(x["qps"] for x in runs) for runs in rows.values())
    print(f"\nbatching gain: {b / a:.2f}x the throughput\nend: {load_line()} (with this bench); other processes {others.cores():.2f} cores")


if __name__ == "__main__":
    main()
