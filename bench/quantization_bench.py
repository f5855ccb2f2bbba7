"""int8 vs fp32 image encoder of two bundles exported from the same run: speed and accuracy.

    python bench/quantization_bench.py FP32_BUNDLE INT8_BUNDLE [--images DIR] [-n 64] [--batch 1 32]
                                       [--threads 1 2] [--rounds 7]

Speed: the image graph alone (decoding excluded) on the same ``n`` real photos, fp32, int8 with the kernels
the runtime chooses on this CPU (``int8_kernels``) and int8 with exact products (``DAGNN_INT8_KERNELS=exact``)
timed in alternation round after round so that load from other processes hits all alike; per variant the
best and the median round are reported, and the largest difference between the two int8 variants' outputs. Accuracy: the test-split mAP each bundle's manifest records (measured
at export with the exported graphs) and the cosine between the two encoders' embeddings on the photos.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dagnn_runtime import int8_kernels, read_bundle
from dagnn_runtime.dataset import Dataset
from dagnn_runtime.graph_session import graph_session
from dagnn_runtime.metrics import l2_normalize
from dagnn_runtime.preprocess import load_batch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def image_paths(source: Path, n: int) -> list[Path]:
    if (source / "pairs.jsonl").is_file():
        ds = Dataset.load(source)
        paths = [ds.image_path(i) for i in ds.with_images()]
    else:
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images in {source}")
    return paths[:n]


def session(bundle, threads: int, kernels: str | None = None):
    """The image graph as the runtime serves it; ``kernels``: force int8 ``fast`` or ``exact`` kernels."""
    saved = os.environ.pop(int8_kernels.OVERRIDE_ENV, None)
    if kernels:
        os.environ[int8_kernels.OVERRIDE_ENV] = kernels
    try:
        return graph_session(bundle, "image_encoder", threads=threads, providers=["CPUExecutionProvider"])
    finally:
        os.environ.pop(int8_kernels.OVERRIDE_ENV, None)
        if saved is not None:
            os.environ[int8_kernels.OVERRIDE_ENV] = saved


def encode(sess, pixels: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([sess.run(["embedding"], {"pixels": pixels[i:i + batch]})[0]
                           for i in range(0, len(pixels), batch)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fp32", type=Path)
    ap.add_argument("int8", type=Path)
    ap.add_argument("--images", type=Path, help="data set folder or image folder (default: the run's data set)")
    ap.add_argument("-n", type=int, default=64, help="photos to encode per round")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    bundles = {"fp32": read_bundle(args.fp32), "int8": read_bundle(args.int8)}
    if bundles["int8"].manifest["model"].get("precision") != "int8":
        raise SystemExit(f"{args.int8} is not an int8 bundle")
    size = bundles["fp32"].image_size
    source = args.images or Path(bundles["fp32"].manifest["config"]["data"])
    pixels = load_batch(image_paths(source, args.n), size)
    _, why = int8_kernels.choose(bundles["int8"].manifest, "image_encoder", str(args.int8))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; onnxruntime {ort.__version__}; "
          f"{len(pixels)} photos of {size}px; load average at start {os.getloadavg()[0]:.2f}")
    print(f"int8 kernels chosen here: {why}")
    print(f"\n{'threads':>7} | {'batch':>5} | {'fp32 ms/img':>16} | {'int8 ms/img':>16} | {'speed-up':>15} | "
          f"{'int8 exact ms/img':>17} | {'speed-up':>15}")
    print(f"{'':>7} | {'':>5} | {'best / median':>16} | {'best / median':>16} | {'best / median':>15} | "
          f"{'best / median':>17} | {'best / median':>15}")
    print("-" * 112)
    for threads in args.threads:
        sessions = {"fp32": session(bundles["fp32"], threads), "int8": session(bundles["int8"], threads),
                    "exact": session(bundles["int8"], threads, "exact")}
        for batch in args.batch:
            times = {k: [] for k in sessions}
            for sess in sessions.values():  # warm-up
                encode(sess, pixels[:batch], batch)
            for _ in range(args.rounds):
                for key, sess in sessions.items():
                    start = time.perf_counter()
                    encode(sess, pixels, batch)
                    times[key].append(1000 * (time.perf_counter() - start) / len(pixels))
            best = {k: min(v) for k, v in times.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"{threads:>7} | {batch:>5} | {best['fp32']:>7.2f} / {med['fp32']:>6.2f} | "
                  f"{best['int8']:>7.2f} / {med['int8']:>6.2f} | "
                  f"{best['fp32'] / best['int8']:>6.2f}x / {med['fp32'] / med['int8']:>5.2f}x | "
                  f"{best['exact']:>8.2f} / {med['exact']:>6.2f} | "
                  f"{best['fp32'] / best['exact']:>6.2f}x / {med['fp32'] / med['exact']:>5.2f}x")
    print(f"load average at end {os.getloadavg()[0]:.2f}")

    emb = {k: encode(s, pixels, 32) for k, s in sessions.items()}
    cos = np.sum(l2_normalize(emb["fp32"]) * l2_normalize(emb["int8"]), axis=1)
    print(f"\ncosine int8 vs fp32 embeddings on these photos: mean {cos.mean():.4f}, min {cos.min():.4f}")
    print(f"int8 as served here vs exact products: max abs difference {np.abs(emb['int8'] - emb['exact']).max():.2e}")
    m = {k: b.manifest["metrics"] for k, b in bundles.items()}
    print(f"\n{'test mAP (manifests)':<28} | {'I2T':>6} | {'T2I':>6} | {'avg':>6}")
    print("-" * 56)
    rows = [("fp32 bundle", m["fp32"]["test"]), ("int8 bundle", m["int8"]["test"])]
    if "test_fp32" in m["int8"]:
        rows.append(("int8 export's fp32 graphs", m["int8"]["test_fp32"]))
    for name, r in rows:
        print(f"{name:<28} | {r['i2t']:.4f} | {r['t2i']:.4f} | {r['avg']:.4f}")
    drop = m["fp32"]["test"]["avg"] - m["int8"]["test"]["avg"]
    print(f"avg mAP lost by int8: {drop:+.4f} (target <= 0.005)")
    sizes = {k: (len(b.read_graph("image_encoder")) + sum(a.nbytes for a in b.read_weights("image_encoder").values()))
             / 2 ** 20 for k, b in bundles.items()}
    print(f"image graph with its weights: fp32 {sizes['fp32']:.1f} MiB, int8 {sizes['int8']:.1f} MiB")
    q = bundles["int8"].manifest.get("quantization", {})
    print("quantisation: " + json.dumps({k: q[k] for k in q if k != "fp32_nodes"}))


if __name__ == "__main__":
    main()
