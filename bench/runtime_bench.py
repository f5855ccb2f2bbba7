"""Serving benchmark of the torch-free runtime: one table of every serving target, measured value and
met/missed, taken the way bench/benchlib.py describes (load stated, sides alternated, median (min-max)).

    python bench/runtime_bench.py --bundle BUNDLE --data DATA [--run RUN] [--compare-bundle OLD_BUNDLE]
                                  [--threads 2] [--photos 500] [--json out.json]

- whole-process start-up: ``import dagnn_runtime`` + ``load()`` against ``import torch``, and the
  ``dagnn query --text`` / ``--image`` commands against an index this script builds;
- text encoder: one query and a batch of 256 texts, against ``--compare-bundle`` (e.g. the same model
  exported in format 1, whose text graph takes a dense bag of words), and parity with torch (``--run``);
  with ``--compare-bundle`` also a whole process that loads the bundle and encodes one text, alternated
  between the two bundles (what the bundle format changes in a one-off query's start-up);
- image query end to end (decode → encode → HNSW top-10) and ``dagnn index build --images`` photos/s;
- the image encoder in onnxruntime against the same model in torch eager (``--run``), and against
  open_clip's smallest image tower in torch when open_clip is installed (random weights: speed only).
Without ``--data`` there is nothing real to measure and the script stops.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # exact search and scoring are matrix-vector products

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (OtherLoad, Stat, Table, alternate, alternate_processes, check_load, command_line,  # noqa: E402
                      install_kind, load_average, py_code, py_module, usable_cores)

TARGETS = {"query_text_s": 0.45, "query_image_s": 0.6, "startup_ratio": 0.10, "text_one_ms": 0.3,
           "image_query_ms": {"fp32": 15.0, "int8": 10.0}, "build_photos_s": {"fp32": 90.0, "int8": 150.0},
           "text_parity": 1e-4}
MAX_SPREAD = 2.0  # a comparison whose torch side varies more than this (max/min) is not printed


def cli(*args) -> list:
    return py_module("dagnn_cli", *args)


def sample(data: Path, n: int, seed: int = 0):
    """(photo paths, their texts with at least one tag) of ``n`` random pairs of the data set."""
    from dagnn_runtime.dataset import Dataset

    ds = Dataset.load(data)
    rows = ds.with_images()
    pick = np.random.default_rng(seed).choice(rows, size=min(n, len(rows)), replace=False)
    return [ds.image_path(i) for i in pick], [", ".join(ds.pairs[i].tags) for i in pick if ds.pairs[i].tags]


# ----------------------------------------------------------------------------------------------- parts
def bench_build(bundle, photos, work: Path, threads, rounds, table, precision):
    """``dagnn index build --images`` over the photos, whole process, fresh index each run."""
    folder = work / "photos"
    folder.mkdir()
    for i, p in enumerate(photos):
        (folder / f"{i:05d}{p.suffix}").symlink_to(Path(p).resolve())  # --data may be a relative path
    runs = {}
    for r in range(rounds):
        out = work / f"build{r}"
        res = alternate_processes({"build": cli("index", "build", "--bundle", bundle, "--images", folder,
                                                "--index", out, "--threads", threads, "--quiet")}, 1, warmup=0)
        runs.setdefault("s", []).append(res["build"] if isinstance(res["build"], str) else res["build"][0].median)
    if any(isinstance(x, str) for x in runs["s"]):
        table.add("dagnn index build --images", f"failed: {next(x for x in runs['s'] if isinstance(x, str))}")
        return None
    rate = Stat([len(photos) / s for s in runs["s"]])
    goal = TARGETS["build_photos_s"].get(precision, 90.0)
    table.add(f"dagnn index build --images, {len(photos)} photos, photos/s (whole process)",
              f"{rate.median:.1f} ({rate.min:.1f}-{rate.max:.1f})", f">= {goal:g} ({precision})", rate.median >= goal)
    return work / "build0"


def bench_startup(bundle, index_parent, photo, text, threads, rounds, table, compare=None):
    """``compare``: another loaded bundle (a ``Model``) whose one-text process alternates with this one's."""
    load_code = ("import dagnn_runtime as dr; "
                 f"dr.load({str(bundle)!r}, threads={threads})")
    res = alternate_processes({"runtime": py_code(load_code), "torch": py_code("import torch")}, rounds)
    if compare is not None:  # one text query's process, this bundle against the other, alternated
        def encode(b):
            return py_code("import dagnn_runtime as dr; "
                           f"dr.load({str(b)!r}, threads={threads}).encode_texts([{text!r}])")
        ab = alternate_processes({"new": encode(bundle), "old": encode(compare.source)}, rounds)
        what = ("import + load() + one text encoded, whole process (s): this bundle vs format "
                f"{compare.manifest['format_version']}")
        failed = [v for v in ab.values() if isinstance(v, str)]
        if failed:
            table.add(what, f"failed: {failed[0]}")
        else:
            new, old = ab["new"][0], ab["old"][0]
            table.add(what, f"{new.fmt(1, 3)} vs {old.fmt(1, 3)}: {old.median - new.median:+.3f} s")
    if index_parent is not None:  # not alternated with torch: a torch import slows the processes after it
        res.update(alternate_processes({
            "query_text": cli("query", "--bundle", bundle, "--index", index_parent, "--text", text,
                              "--threads", threads),
            "query_image": cli("query", "--bundle", bundle, "--index", index_parent, "--image", photo,
                               "--threads", threads)}, rounds))
    for name, goal, what in (("query_text", TARGETS["query_text_s"], "dagnn query --text"),
                             ("query_image", TARGETS["query_image_s"], "dagnn query --image")):
        if name not in res:
            continue
        if isinstance(res[name], str):
            table.add(f"{what}, whole process (s)", f"failed: {res[name]}")
            continue
        stat, peak = res[name]
        table.add(f"{what}, whole process (s); peak memory", f"{stat.fmt(1, 3)}; {peak / 2**20:.0f} MB",
                  f"<= {goal}", stat.median <= goal)
    rt, th = res["runtime"], res["torch"]
    if isinstance(rt, str):
        table.add("import dagnn_runtime + load() (s)", f"failed: {rt}")
    elif isinstance(th, str):
        table.add("import dagnn_runtime + load() (s)", rt[0].fmt(1, 3), f"(import torch failed: {th})")
    else:
        ratio = rt[0].median / th[0].median
        table.add("import dagnn_runtime + load() (s); peak memory", f"{rt[0].fmt(1, 3)}; {rt[1] / 2**20:.0f} MB")
        table.add("import torch (s); peak memory", f"{th[0].fmt(1, 3)}; {th[1] / 2**20:.0f} MB",
                  "" if th[0].spread <= MAX_SPREAD else f"spread {th[0].spread:.1f}x > {MAX_SPREAD}x")
        table.add("  runtime start-up / torch import", f"{ratio:.3f}", f"<= {TARGETS['startup_ratio']}",
                  ratio <= TARGETS["startup_ratio"])


def bench_text(model, old_model, texts, rounds, table):
    one = ["sky, clouds, sunset"]
    batch = (texts * (256 // max(1, len(texts)) + 1))[:256]
    sides = {"new": lambda: model.encode_texts(one)}
    if old_model is not None:
        sides["old"] = lambda: old_model.encode_texts(one)
    res = alternate(sides, rounds, warmup=20, inner=20)
    fmt = res["new"].fmt(1e3, 3)
    if "old" in res:
        fmt += f" vs {res['old'].fmt(1e3, 3)} format {old_model.manifest['format_version']}"
    table.add("text encoder, one query of 3 tags (ms, encode_texts)", fmt, f"<= {TARGETS['text_one_ms']}",
              res["new"].median * 1e3 <= TARGETS["text_one_ms"])
    sides = {"new": lambda: model.encode_texts(batch)}
    if old_model is not None:
        sides["old"] = lambda: old_model.encode_texts(batch)
    res = alternate(sides, max(5, rounds // 4), warmup=2)
    if "old" in res and old_model.manifest["format_version"] == 1:  # the target: no slower than bag of words
        table.add("text encoder, batch of 256 texts (ms)", f"{res['new'].fmt()} vs {res['old'].fmt()} format 1",
                  "no slower than the bag-of-words graph", res["new"].median <= res["old"].median)
    elif "old" in res:  # format 2 against 3: the same text graph, loaded differently; no target applies
        table.add("text encoder, batch of 256 texts (ms)",
                  f"{res['new'].fmt()} vs {res['old'].fmt()} format {old_model.manifest['format_version']}")
    else:
        table.add("text encoder, batch of 256 texts (ms)", res["new"].fmt(), "(no --compare-bundle given)")


def text_parity(model, run, texts, table):
    """Max abs difference of the runtime's (L2-normalised) text embeddings to the torch model's."""
    import torch

    from dagnn_export.run import load_run
    from dagnn_runtime.dataset import bag_of_words
    from dagnn_runtime.metrics import l2_normalize

    torch_model, _ = load_run(run)
    bow = bag_of_words([model.parse_text(t)[0] for t in texts], {t: j for j, t in enumerate(model.vocab)})
    with torch.no_grad():
        ref = torch_model.eval().text_common(torch.from_numpy(bow)).numpy()
    diff = float(np.abs(model.encode_texts(texts) - l2_normalize(ref)).max())
    table.add(f"text embedding parity with torch, {len(texts)} texts (max abs diff, unit vectors)", f"{diff:.2e}",
              f"<= {TARGETS['text_parity']:g}", diff <= TARGETS["text_parity"])


def bench_image_query(model, photos, text_index, k, table, precision):
    """decode → encode → HNSW top-k per photo; p50 over the photos after a warm-up."""
    from dagnn_runtime.preprocess import load_batch

    for p in photos[:5]:
        text_index.search(model.encode_images([p]), k=k)
    stages = {"decode": [], "encode": [], "search": [], "total": []}
    for p in photos:
        t0 = time.perf_counter()
        pixels = load_batch([p], model.image_size)
        t1 = time.perf_counter()
        vec = model.encode_pixels(pixels)
        t2 = time.perf_counter()
        text_index.search(vec, k=k)
        t3 = time.perf_counter()
        for key, v in (("decode", t1 - t0), ("encode", t2 - t1), ("search", t3 - t2), ("total", t3 - t0)):
            stages[key].append(v)
    total = Stat(stages["total"])
    goal = TARGETS["image_query_ms"].get(precision, 15.0)
    table.add(f"image query end to end, {len(photos)} photos, p50 (ms)", total.fmt(),
              f"<= {goal:g} ({precision})", total.median * 1e3 <= goal)
    table.add("  decode / encode / search p50 (ms)",
              " / ".join(f"{statistics.median(stages[s]) * 1e3:.2f}" for s in ("decode", "encode", "search")),
              f"{len(text_index)} texts in the index")


def bench_torch(model, run, photos, threads, rounds, table):
    """The bundle's image path in torch eager (backbone → image_common) against onnxruntime, alternating."""
    try:
        import torch

        from dagnn_export.backbones import build_backbone
        from dagnn_export.run import load_run
        from dagnn_runtime.preprocess import load_batch
    except ImportError as exc:
        table.add("onnxruntime vs torch eager", f"not measured: torch side unavailable ({exc})")
        return
    torch.set_num_threads(threads)
    torch_model, config = load_run(run)
    backbone = build_backbone(config["backbone"], config.get("backbone_weights")).eval()
    torch_model.eval()
    pixels = load_batch(photos[:32], model.image_size)
    x = torch.from_numpy(pixels)

    def fwd(batch):
        with torch.inference_mode():
            return torch_model.image_common(backbone(batch))

    for label, n, inner in (("one photo", 1, 3), ("batch of 32, per photo", 32, 1)):
        res = alternate({"ort": lambda: model.encode_pixels(pixels[:n]), "torch": lambda: fwd(x[:n])},
                        rounds if n == 1 else max(4, rounds // 4), warmup=5 if n == 1 else 2, inner=inner)
        ort_s, torch_s = Stat([s / n for s in res["ort"].samples]), Stat([s / n for s in res["torch"].samples])
        if torch_s.spread > MAX_SPREAD or ort_s.spread > MAX_SPREAD:
            table.add(f"image encoder {label}: onnxruntime vs torch eager",
                      f"not printed: spread torch {torch_s.spread:.1f}x, onnxruntime {ort_s.spread:.1f}x "
                      f"> {MAX_SPREAD}x (machine not steady)")
            continue
        table.add(f"image encoder {label}, {threads} threads (ms): onnxruntime vs torch eager",
                  f"{ort_s.fmt()} vs {torch_s.fmt()} = {torch_s.median / ort_s.median:.1f}x")


def bench_open_clip(model, photos, threads, rounds, table, work: Path):
    """What a user would otherwise pick, on the same photo pixels and threads, alternating with ours:
    open_clip's smallest image tower in torch eager, and rclip's approach (the ONNX image tower of CLIP
    ViT-B-32 at 256 px in onnxruntime; only the towers are timed, not the search). Neither's weights can be
    had offline, so both run with random weights: speed only (the arithmetic does not depend on the
    weights' values)."""
    try:
        import open_clip
        import torch
    except ImportError:
        table.add("open_clip / rclip comparison", "not measured: open_clip is not installed (the bench extra)")
        return
    import onnxruntime as ort

    from dagnn_runtime.preprocess import load_batch

    torch.set_num_threads(threads)
    pixels = load_batch(photos[:1], model.image_size)
    for name, how in (("ViT-S-32", "torch"), ("ViT-B-32-256", "onnxruntime")):
        clip = open_clip.create_model(name, pretrained=None).eval()
        size = clip.visual.image_size
        size = size if isinstance(size, int) else size[0]
        x = torch.randn(1, 3, size, size)
        params = sum(p.numel() for p in clip.visual.parameters()) / 1e6
        if how == "torch":
            def fwd(clip=clip, x=x):
                with torch.inference_mode():
                    return clip.encode_image(x)
        else:
            path = work / f"{name}.onnx"
            torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX form
            with torch.no_grad():
                torch.onnx.export(clip.visual, (x,), str(path), input_names=["x"], opset_version=17, dynamo=False)
            torch.backends.mha.set_fastpath_enabled(True)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            feed = {"x": x.numpy()}

            def fwd(sess=sess, feed=feed):
                return sess.run(None, feed)
        # one A/B pair per alternative; each sample the median of 5 calls after 50 ms idle (see alternate())
        res = alternate({"dagnn": lambda: model.encode_pixels(pixels), "other": fwd}, rounds, warmup=5, inner=5,
                        inner_median=True, settle=0.05)
        ours, stat = res["dagnn"], res["other"]
        label = "open_clip's smallest" if name == "ViT-S-32" else "rclip's model, same architecture"
        key = f"{name} ({how}, {size} px, {params:.0f}M parameters)"
        if stat.spread > MAX_SPREAD or ours.spread > MAX_SPREAD:
            table.add(f"image encoder one photo vs {label}", f"not printed: spread {stat.spread:.1f}x / "
                      f"{ours.spread:.1f}x > {MAX_SPREAD}x (machine not steady)")
            continue
        table.add(f"image encoder one photo (ms): dagnn vs {label}: {key}, random weights",
                  f"{ours.fmt()} vs {stat.fmt()} = {stat.median / ours.median:.1f}x")


# ------------------------------------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="data set folder (photos and tag texts)")
    ap.add_argument("--run", type=Path, help="training run of the bundle's model: torch comparison and parity")
    ap.add_argument("--compare-bundle", type=Path, help="another bundle of the same model (e.g. format 1) for A/B")
    ap.add_argument("--threads", type=int, default=min(2, usable_cores()))
    ap.add_argument("--queries", type=int, default=100, help="photos for the image query latency")
    ap.add_argument("--photos", type=int, default=1000, help="photos for dagnn index build")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--process-rounds", type=int, default=5, help="whole-process runs per command")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--load-limit", type=float, default=1.0)
    ap.add_argument("--allow-load", action="store_true", help="measure even above --load-limit (marked)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["build", "startup", "torch", "open_clip"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    load0 = check_load(args.load_limit, args.allow_load)
    others = OtherLoad()
    import dagnn_runtime as dr

    model = dr.load(args.bundle, threads=args.threads)
    precision = model.manifest.get("model", {}).get("precision", "fp32")
    old = dr.load(args.compare_bundle, threads=args.threads) if args.compare_bundle else None
    photos, texts = sample(args.data, max(args.queries, args.photos, 256))
    table = Table()
    work = tempfile.TemporaryDirectory(prefix="dagnn-bench-")
    root = Path(work.name)
    try:
        index_parent = root / "index"
        index_parent.mkdir()
        from dagnn_runtime.indexes.hnsw import HnswIndex

        text_index = HnswIndex.for_model(model, "text", capacity=len(texts))
        text_index.add(model.encode_texts(texts), [str(i) for i in range(len(texts))])
        text_index.save(index_parent / "text")
        if "build" not in args.skip:
            built = bench_build(args.bundle, photos[:args.photos], root, args.threads, 3, table, precision)
            if built is not None:
                built.rename(index_parent / "image")
        if "startup" not in args.skip:  # before this process imports torch (parity, torch comparison)
            have_both = (index_parent / "image").exists()
            bench_startup(args.bundle, index_parent if have_both else None, photos[0], "sky, clouds", args.threads,
                          args.process_rounds, table, old)
        bench_image_query(model, photos[:args.queries], text_index, args.k, table, precision)
        bench_text(model, old, texts, args.rounds, table)
        if args.run:
            text_parity(model, args.run, texts[:256], table)
        if args.run and "torch" not in args.skip:
            bench_torch(model, args.run, photos, args.threads, args.rounds, table)
        if "open_clip" not in args.skip:
            bench_open_clip(model, photos, args.threads, args.rounds, table, root)
    finally:
        work.cleanup()
    load1, other = load_average(), others.cores()  # load1 counts this bench's own threads; `other` does not
    flag = "" if load0 <= args.load_limit and other <= OtherLoad.LIMIT else "  ** TAKEN UNDER LOAD: do not publish **"
    header = (f"$ {command_line()}\n"
              f"bundle {args.bundle} ({precision}, format {model.manifest['format_version']}); {args.threads} threads; "
              f"{usable_cores()} usable cores; {install_kind()}\nload average {load0:.2f} at start, {load1:.2f} at end (with this bench); other processes {other:.2f} cores{flag}")
    table.print(header)
    if args.json:
        args.json.write_text(json.dumps({"command": command_line(), "load": [load0, load1], "other_cores": other,
                                         "rows": table.rows},
                                        indent=2))


if __name__ == "__main__":
    main()
