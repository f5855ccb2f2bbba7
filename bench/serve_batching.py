"""What dynamic batching gains: image search with batching on vs one image per model call.

    python bench/serve_batching.py --bundle B --index I --photos DIR [--seconds 10] [--concurrency 32] [--rounds 5]

Two ``dagnn serve`` processes on 127.0.0.1 with the same bundle, index and threads: A runs every image
alone (``--max-batch 1``), B gathers up to ``--max-batch`` images for at most ``--max-wait-ms``. Both are
driven by wrk (``serve_load``: a native client, so the client takes little of the machine), warmed up, then
measured in alternating rounds (A B, B A, ...) so that both see the same machine load;
the table gives medians with the min–max spread over rounds. A first table times the model alone
(``encode_pixels``, ms per image by batch size, alternating sizes) to show where any gain comes from.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import OtherLoad, load_average  # noqa: E402
from serve_load import ensure_wrk, run_wrk, scripts, start_server  # noqa: E402


def load_photos(folder: Path, n: int) -> list:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if not files:
        sys.exit(f"no .jpg/.png photos under {folder}")
    return files


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
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=None, help="Inference threads of both servers.")
    ap.add_argument("--model-workers", type=int, default=1, help="Batches run at once, both servers.")
    args = ap.parse_args()
    print(f"start: load average {load_average():.2f}\ncommand: {' '.join(sys.argv)}")
    others = OtherLoad()
    wrk = ensure_wrk()
    photos = load_photos(Path(args.photos), 200)
    print(f"\nmodel alone (encode_pixels, threads {args.threads or 'default'}), ms per image, median [min–max]")
    for b, t in model_only(args.bundle, photos, args.threads, args.rounds).items():
        print(f"  batch {b:>2}: {spread(t)}")
    threads = ["--threads", str(args.threads)] if args.threads else []
    threads += ["--model-workers", str(args.model_workers)]
    variants = {"one by one (--max-batch 1)": ["--max-batch", "1", *threads],
                f"batched (--max-batch {args.max_batch}, --max-wait-ms {args.max_wait_ms:g})":
                    ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), *threads]}
    servers = {name: start_server(args.bundle, args.index, extra) for name, extra in variants.items()}
    tmp = tempfile.TemporaryDirectory()
    path, script = scripts(Path(tmp.name), photos[0].read_bytes(), "sky", 10)["image_search"]
    try:
        for _, url in servers.values():  # warm-up
            run_wrk(wrk, url + path, script, 8, 2)
        rows = {name: [] for name in variants}
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                rows[name].append(run_wrk(wrk, servers[name][1] + path, script, args.concurrency, args.seconds))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)
        tmp.cleanup()
    print(f"\nimage search, {args.seconds} s at concurrency {args.concurrency} per round, {args.rounds} rounds "
          "(median [min–max])")
    print(f"{'variant':<44} {'q/s':>22} {'p50 ms':>22} {'p99 ms':>22} {'errors':>6}")
    for name, runs in rows.items():
        print(f"{name:<44} {spread([x['qps'] for x in runs]):>22} {spread([x['p50'] for x in runs]):>22} "
              f"{spread([x['p99'] for x in runs]):>22} {sum(x['errors'] for x in runs):>6}")
    a, b = (statistics.median(x["qps"] for x in runs) for runs in rows.values())
    print(f"\nbatching gain: {b / a:.2f}x the throughput\nend: load average {load_average():.2f} (with this bench); "
          f"other processes {others.cores():.2f} cores")


if __name__ == "__main__":
    main()
