"""Do onnxruntime's graph optimisations help this encoder, and would a saved optimised graph in the bundle?

    python bench/ort_options.py --graph BUNDLE/image_encoder.onnx [--threads 2] [--rounds 5]

For each way of building the session: session build time (what every process start pays) and the run
time of one image, alternating the variants round by round:
- the graph as exported, optimised at load with each level (DISABLE, BASIC, EXTENDED, ALL = the default);
- a graph saved after BASIC optimisation (portable: standard ONNX operators only), optimised at load with ALL;
- a graph saved after ALL optimisation, loaded with optimisation off (fastest build, but the saved graph
  holds operators and layouts chosen for this CPU and onnxruntime version, so it cannot ship in a bundle).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OtherLoad, Stat, check_load, command_line, load_average  # noqa: E402

LEVELS = {"DISABLE": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def options(level: str, threads: int, save_to: str | None = None):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[level]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if save_to:
        opts.optimized_model_filepath = save_to
    return opts


def measure(path: str, level: str, threads: int, runs: int) -> tuple[float, float]:
    """(session build seconds, median seconds of one single-image run)."""
    t = time.perf_counter()
    sess = ort.InferenceSession(path, options(level, threads), providers=["CPUExecutionProvider"])
    build = time.perf_counter() - t
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    x = {inp.name: np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)}
    for _ in range(3):
        sess.run(None, x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, x)
        times.append(time.perf_counter() - t)
    return build, statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graph", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=15, help="single-image runs per session")
    ap.add_argument("--load-limit", type=float, default=1.0)
    ap.add_argument("--allow-load", action="store_true")
    args = ap.parse_args(argv)
    load0 = check_load(args.load_limit, args.allow_load)
    others = OtherLoad()
    with tempfile.TemporaryDirectory() as tmp:
        basic, full = str(Path(tmp) / "basic.onnx"), str(Path(tmp) / "all.onnx")
        for level, out in (("BASIC", basic), ("ALL", full)):
            ort.InferenceSession(str(args.graph), options(level, args.threads, out), providers=["CPUExecutionProvider"])
        variants = {f"exported, {lv} at load": (str(args.graph), lv) for lv in LEVELS}
        variants["saved after BASIC, ALL at load"] = (basic, "ALL")
        variants["saved after ALL, DISABLE at load"] = (full, "DISABLE")
        builds, runs = {k: [] for k in variants}, {k: [] for k in variants}
        for _ in range(args.rounds):
            for name, (path, level) in variants.items():
                b, r = measure(path, level, args.threads, args.runs)
                builds[name].append(b)
                runs[name].append(r)
    load1, other = load_average(), others.cores()  # load1 counts this bench's own threads; `other` does not
    flag = "" if load0 <= args.load_limit and other <= OtherLoad.LIMIT else "  ** TAKEN UNDER LOAD: do not publish **"
    print(f"$ {command_line()}\n{args.graph}; {args.threads} threads; load average {load0:.2f} at start, "
          f"{load1:.2f} at end (with this bench); other processes {other:.2f} cores{flag}")
    width = max(map(len, variants))
    print(f"{'session':<{width}}  build ms: median (min-max)   one image ms: median (min-max)")
    for name in variants:
        print(f"{name:<{width}}  {Stat(builds[name]).fmt():<27}  {Stat(runs[name]).fmt()}")


if __name__ == "__main__":
    main()
