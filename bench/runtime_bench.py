"""Serving benchmark of the torch-free runtime: prints one table of measurements, ratios and targets.

    python bench/runtime_bench.py --bundle BUNDLE [--data DIR] [--run RUN] [--threads 2]
                                  [--hnsw-items 100000] [--hnsw-dim 1024] [--json out.json]

- image query end to end (decode → preprocess → encode → HNSW search of a text index) and text query
  (tokenise → bag of words → encode → HNSW search of an image index): p50 / p95 latency;
- image encode throughput, single and batched (preprocessed pixels, graph only), and the same model in
  torch eager when ``--run`` (a training run of the bundle's model) and torch are available;
- HNSW recall@10 against exact search, and queries/s of both, on ``--hnsw-items`` random vectors;
- ``import dagnn_runtime`` + ``load()`` against ``import torch``, each in a fresh interpreter.

The bundle is required: figures of a random test bundle would say nothing about a served model (``dagnn
demo`` leaves one in ``demo-out/bundle``). Without ``--data`` the query indexes hold random vectors and the
query images are synthetic JPEGs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Single-query exact search is a matrix-vector product: memory-bound, and multi-threaded OpenBLAS only
# slows it down (much more so on a busy machine). One BLAS thread gives the fairest (fastest) baseline.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


# ------------------------------------------------------------------------------------------- inputs
def query_inputs(model, data, n, workdir):
    """(image paths, texts) to query with: from a data set folder, else synthetic."""
    rng = np.random.default_rng(0)
    if data:
        from dagnn_runtime.dataset import Dataset

        ds = Dataset.load(data)
        with_images = ds.with_images()
        pick = rng.choice(with_images, size=min(n, len(with_images)), replace=False)
        images = [ds.image_path(i) for i in pick]
        texts = [", ".join(ds.pairs[i].tags) for i in pick if any(t in model.vocab for t in ds.pairs[i].tags)]
        return images, texts
    from PIL import Image

    images = []
    for i in range(n):
        path = Path(workdir) / f"q{i}.jpg"
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((500, 375), Image.BILINEAR).save(path, quality=90)
        images.append(path)
    vocab = list(model.vocab)
    texts = [", ".join(rng.choice(vocab, size=min(4, len(vocab)), replace=False)) for _ in range(n)]
    return images, texts


def query_indexes(model, data, size, batch_size):
    """A text index and an image index to search: the data set's (encoded here), else random vectors."""
    from dagnn_runtime.indexes.hnsw import HnswIndex

    indexes = {}
    if data:
        from dagnn_runtime.dataset import Dataset, bag_of_words

        ds = Dataset.load(data)
        vocab_index = {t: j for j, t in enumerate(model.vocab)}
        bow = bag_of_words([p.tags for p in ds.pairs], vocab_index)
        keep = np.flatnonzero(bow.sum(1) > 0)
        text = HnswIndex.for_model(model, "text")
        text.add(model.encode_bow(bow[keep]), [str(ds.pairs[i].row) for i in keep])
        indexes["text"] = text
        # image index: encoding every photo would dominate the bench; random unit vectors of the same size
        # search exactly as fast (HNSW cost depends on size and dimension, not on where vectors came from)
        size = len(ds.with_images())
    for seed, modality in enumerate(("image", "text")):
        if modality not in indexes:
            index = HnswIndex.for_model(model, modality, capacity=size)
            index.add(synthetic_vectors("clustered", size, 0, model.embedding_dim, seed=seed)[0],
                      [str(i) for i in range(size)])
            indexes[modality] = index
    return indexes


# -------------------------------------------------------------------------------------------- parts
def bench_queries(model, indexes, images, texts, k, warmup=5):
    stages = {"preprocess": [], "encode": [], "search": []}
    total_image, vectors = [], []
    for path in images[:warmup]:
        indexes["text"].search(model.encode_images([path]), k=k)
    for path in images:
        t0 = time.perf_counter()
        pixels = model.preprocess([path])
        t1 = time.perf_counter()
        vec = model.encode_pixels(pixels)
        t2 = time.perf_counter()
        indexes["text"].search(vec, k=k)
        t3 = time.perf_counter()
        vectors.append(vec)
        stages["preprocess"].append(t1 - t0)
        stages["encode"].append(t2 - t1)
        stages["search"].append(t3 - t2)
        total_image.append(t3 - t0)
    total_text = []
    for text in texts[:warmup]:
        indexes["image"].search(model.encode_texts([text]), k=k)
    for text in texts:
        t0 = time.perf_counter()
        indexes["image"].search(model.encode_texts([text]), k=k)
        total_text.append(time.perf_counter() - t0)
    return total_image, stages, total_text, np.concatenate(vectors)


def scores_of(hits):
    """The (n, k) score matrix of ``search``'s hits."""
    return np.array([[h.score for h in row] for row in hits], dtype=np.float32)


def recall(approx_scores, exact_scores, tol=1e-5):
    """recall@k allowing for ties: a result counts when it scores at least the exact k-th best (texts with
    identical tag sets have identical embeddings, so *which* of the tied items is returned is arbitrary)."""
    approx_scores, exact_scores = np.atleast_2d(approx_scores), np.atleast_2d(exact_scores)
    kth = exact_scores[:, -1:]
    return float(np.mean((approx_scores >= kth - tol).sum(1) / exact_scores.shape[1]))


def query_index_recall(index, vectors, k, efs):
    """recall@k and ms/query of the index's HNSW search at each ef against exact search, for these queries
    (image embeddings searching the text index: the cross-modal case, whose queries come from another
    distribution than the items)."""
    exact = scores_of(index.search(vectors, k=k, exact=True))
    rows = []
    for ef in sorted({index.ef, *efs}):
        t = time.perf_counter()
        got = np.concatenate([scores_of(index.search(v, k=k, ef=ef)) for v in vectors])
        rows.append({"ef": ef, "recall": recall(got, exact), "ms": (time.perf_counter() - t) / len(vectors) * 1e3})
    return rows


def bench_encode(model, images, batch_size, rounds):
    pixels = model.preprocess(images[:batch_size] * max(1, -(-batch_size // max(1, len(images)))))[:batch_size]
    for _ in range(5):
        model.encode_pixels(pixels[:1])
    model.encode_pixels(pixels)
    single = timed(lambda: model.encode_pixels(pixels[:1]), rounds)
    batched = timed(lambda: model.encode_pixels(pixels), max(2, rounds // 8))
    return pixels, 1 / statistics.median(single), batch_size / statistics.median(batched), single


def bench_torch(run, pixels, threads, rounds):
    """The bundle's image path in torch eager: backbone (uint8 NHWC in) → model.image_common."""
    try:
        import torch

        from dagnn_export.backbones import build_backbone
        from dagnn_export.run import load_run
    except ImportError as exc:
        return None, f"torch side unavailable ({exc})"
    torch.set_num_threads(threads)
    model, config = load_run(run)
    backbone = build_backbone(config["backbone"], config.get("backbone_weights")).eval()
    x = torch.from_numpy(pixels)

    def forward(batch):
        with torch.inference_mode():
            return model.image_common(backbone(batch))

    for _ in range(10):  # torch's first calls at a new shape are seconds long (kernel/primitive set-up)
        forward(x[:1])
    for _ in range(2):
        forward(x)
    for _ in range(3):
        forward(x[:1])
    single = timed(lambda: forward(x[:1]), rounds)
    batched = timed(lambda: forward(x), max(2, rounds // 8))
    return (1 / statistics.median(single), len(x) / statistics.median(batched), single), None


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


def fresh_interpreter_seconds(code, repeat=3):
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            return None, out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times), None


# --------------------------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True, help="bundle folder or .dagnn (e.g. demo-out/bundle)")
    ap.add_argument("--data", type=Path, help="data set folder for real query images/texts and a real text index")
    ap.add_argument("--run", type=Path, help="training run of the bundle's model, for the torch eager comparison")
    ap.add_argument("--threads", type=int, default=2, help="inference threads (targets assume 2)")
    ap.add_argument("--queries", type=int, default=100, help="image and text queries to time")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=40, help="repetitions of the single-image encode")
    ap.add_argument("--index-size", type=int, default=20000, help="items in the query indexes without --data")
    ap.add_argument("--hnsw-items", type=int, default=100000)
    ap.add_argument("--hnsw-dim", type=int, default=1024)
    ap.add_argument("--hnsw-queries", type=int, default=500)
    ap.add_argument("--hnsw-data", choices=["clustered", "lowrank", "gaussian"], default="clustered",
                    help="synthetic vectors for the recall test (see synthetic_vectors)")
    ap.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--skip-hnsw", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    import dagnn_runtime as dr

    work = tempfile.TemporaryDirectory()
    bundle = args.bundle
    model = dr.load(bundle, threads=args.threads)
    results = {"bundle": str(bundle), "threads": args.threads, "providers": model.providers,
               "backbone": model.manifest.get("model", {}).get("backbone"),
               "precision": model.manifest.get("model", {}).get("precision"), "cpu_count": os.cpu_count()}
    print(f"bundle {bundle}: {results['backbone']} {results['precision']}, d={model.embedding_dim}, "
          f"{len(model.labels)} labels, {len(model.vocab)} tags; {args.threads} threads; {model.providers}",
          file=sys.stderr)

    images, texts = query_inputs(model, args.data, args.queries, work.name)
    indexes = query_indexes(model, args.data, args.index_size, args.batch_size)
    total_image, stages, total_text, vectors = bench_queries(model, indexes, images, texts, args.k)
    results["image_query_ms"] = {"p50": percentile(total_image, 50) * 1e3, "p95": percentile(total_image, 95) * 1e3,
                                 **{f"{s}_p50": percentile(v, 50) * 1e3 for s, v in stages.items()},
                                 "index_items": len(indexes["text"]),
                                 "index_kind": "data set texts" if args.data else "clustered random",
                                 "index_recall": query_index_recall(indexes["text"], vectors, args.k, args.ef),
                                 "index_ef": indexes["text"].ef}
    results["text_query_ms"] = {"p50": percentile(total_text, 50) * 1e3, "p95": percentile(total_text, 95) * 1e3,
                                "index_items": len(indexes["image"])}

    pixels, ort_single, ort_batched, _ = bench_encode(model, images, args.batch_size, args.rounds)
    results["encode_images_per_s"] = {"onnxruntime_single": ort_single, "onnxruntime_batched": ort_batched,
                                      "batch_size": args.batch_size}
    if args.run:
        torch_res, why = bench_torch(args.run, pixels, args.threads, args.rounds)
        if torch_res:
            results["encode_images_per_s"].update(torch_single=torch_res[0], torch_batched=torch_res[1])
        else:
            results["torch_note"] = why

    if not args.skip_hnsw:
        print(f"HNSW: building {args.hnsw_items} x {args.hnsw_dim} ...", file=sys.stderr)
        results["hnsw"] = bench_hnsw(args.hnsw_items, args.hnsw_dim, args.hnsw_queries, args.k, args.threads,
                                     args.ef, args.hnsw_data)

    load_code = ("import time; t = time.perf_counter(); import dagnn_runtime as dr; "
                 f"dr.load({str(bundle)!r}, threads={args.threads}); print(time.perf_counter() - t)")
    torch_code = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
    results["startup_s"] = {"import_runtime_and_load": fresh_interpreter_seconds(load_code)[0],
                            "import_torch": fresh_interpreter_seconds(torch_code)[0]}
    work.cleanup()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_table(r):
    rows = []

    def row(name, value, target="", ok=None):
        mark = "" if ok is None else ("yes" if ok else "NO")
        rows.append((name, value, target, mark))

    iq, tq = r["image_query_ms"], r["text_query_ms"]
    row("image query p50 / p95 (ms)", f"{iq['p50']:.2f} / {iq['p95']:.2f}", "p50 <= 30", iq["p50"] <= 30)
    row("  preprocess / encode / search p50 (ms)",
        f"{iq['preprocess_p50']:.2f} / {iq['encode_p50']:.2f} / {iq['search_p50']:.3f}",
        f"{iq['index_items']} texts")
    for x in iq["index_recall"]:
        row(f"  text index ({iq['index_kind']}) ef={x['ef']}: recall@10 / ms",
            f"{x['recall']:.4f} / {x['ms']:.3f}", "index default ef" if x["ef"] == iq["index_ef"] else "")
    row("text query p50 / p95 (ms)", f"{tq['p50']:.3f} / {tq['p95']:.3f}", "p50 <= 2", tq["p50"] <= 2)
    enc = r["encode_images_per_s"]
    row("encode images/s single / batched (onnxruntime)",
        f"{enc['onnxruntime_single']:.1f} / {enc['onnxruntime_batched']:.1f}", f"batch {enc['batch_size']}")
    if "torch_single" in enc:
        ratio = enc["onnxruntime_single"] / enc["torch_single"]
        row("encode images/s single / batched (torch eager)",
            f"{enc['torch_single']:.1f} / {enc['torch_batched']:.1f}")
        row("onnxruntime / torch, single image", f"{ratio:.2f}x", ">= 3x", ratio >= 3)
        row("onnxruntime / torch, batched", f"{enc['onnxruntime_batched'] / enc['torch_batched']:.2f}x")
    elif "torch_note" in r:
        row("torch eager comparison", r["torch_note"])
    if "hnsw" in r:
        h = r["hnsw"]
        row(f"HNSW {h['items']} x {h['dim']} ({h['data']}) build (s)", f"{h['build_s']:.1f}", "M=16, efC=200")
        row("exact search queries/s (single query)", f"{h['exact_qps']:.1f}")
        best = next((x for x in h["rows"] if x["recall"] >= 0.99), None)
        for x in h["rows"]:
            target, ok = "", None
            if x is best:
                target, ok = "recall >= 0.99 at >= 20x", x["speedup"] >= 20 and h["items"] >= 100000
            row(f"  HNSW ef={x['ef']}: recall@10 / queries/s / x exact",
                f"{x['recall']:.4f} / {x['qps']:.0f} / {x['speedup']:.1f}x", target, ok)
        if best is None:
            row("  HNSW recall@10 >= 0.99", "not reached at the ef tried", "recall >= 0.99", False)
    s = r["startup_s"]
    if s["import_runtime_and_load"] is not None and s["import_torch"]:
        ratio = s["import_runtime_and_load"] / s["import_torch"]
        row("import dagnn_runtime + load / import torch (s)",
            f"{s['import_runtime_and_load']:.3f} / {s['import_torch']:.3f} = {ratio:.2f}", "<= 0.20", ratio <= 0.2)
    else:
        row("import dagnn_runtime + load (s)", f"{s['import_runtime_and_load']}", "(torch not importable)")
    widths = [max(len(str(x[i])) for x in rows + [("measure", "value", "target", "met")]) for i in range(4)]
    header = ("measure", "value", "target", "met")
    print(f"bundle: {r['bundle']} ({r['backbone']}, {r['precision']}); threads {r['threads']}; "
          f"{r['cpu_count']} CPUs; {', '.join(r['providers'])}")
    for line in [header, tuple("-" * w for w in widths)] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())


if __name__ == "__main__":
    main()
