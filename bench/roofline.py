"""Roofline of an ONNX encoder on this machine: work per item from the graph, the machine's measured peak,
and the fraction of that peak the encoder reaches under onnxruntime.

    python bench/roofline.py --graph BUNDLE/image_encoder.onnx [--threads 1 2] [--batch 1 32]

- FLOPs and bytes per item: every Conv / MatMul / Gemm (and their integer forms) of the graph, with the
  shapes onnx's shape inference gives at batch 1 (a multiply-add counts as 2 FLOPs); bytes are the weights
  read once plus each such node's activation inputs and outputs (an upper bound: caches and fused
  kernels keep some of them on chip).
- peak: numpy float32 matrix product (2048 x 2048, BLAS) and a large array copy (memory bandwidth), each
  in a fresh interpreter pinned to the thread count, median of several runs.
- achieved: the encoder in onnxruntime on random pixels (same thread counts), median seconds per item.
Needs onnx (the export extra) besides the runtime. Prints one table; ``--json`` also writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OtherLoad, check_load, command_line  # noqa: E402

HEAVY_OPS = {"Conv": "conv", "ConvInteger": "conv", "QLinearConv": "conv",
             "MatMul": "matmul", "MatMulInteger": "matmul", "QLinearMatMul": "matmul", "Gemm": "gemm"}


def load_time() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------------------------------ graph cost
def _shapes(model, batch: int, tags: int = 3) -> dict:
    """name -> shape of every input and output of the heavy nodes, found by running the graph once in
    onnxruntime with those tensors exposed as outputs (onnx's shape inference stops at some Pad nodes)."""
    import onnxruntime as ort
    from onnx import helper

    names = {i.name: list(i.dims) for i in model.graph.initializer}
    wanted = [x for n in model.graph.node if n.op_type in HEAVY_OPS or n.op_type == "Gather"
              for x in (*n.input, *n.output) if x and x not in names]
    known = {o.name for o in model.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in known:
            model.graph.output.append(helper.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {}
    for inp in sess.get_inputs():
        # symbolic dims: the batch, except a tag-id input's length (a query of ``tags`` tags)
        shape = [d if isinstance(d, int) else (tags if k == 1 and "int64" in inp.type else batch)
                 for k, d in enumerate(inp.shape)]
        feed[inp.name] = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) if "int64" in inp.type \
            else np.zeros(shape, dtype=np.uint8 if "uint8" in inp.type else np.float32)
    outs = [o.name for o in sess.get_outputs()]
    for name, value in zip(outs, sess.run(outs, feed)):
        names[name] = list(value.shape)
    return names


def graph_cost(path, batch: int = 1) -> dict:
    """FLOPs and bytes of the graph's Conv/MatMul/Gemm nodes for ``batch`` items (see the module doc)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    shapes = _shapes(model, batch)
    itemsize = {init.name: helper.tensor_dtype_to_np_dtype(init.data_type).itemsize for init in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    weights = set(itemsize)

    def weight_source(name):
        """A weight may reach the node through DequantizeLinear/Transpose/Cast of an initializer."""
        seen = 0
        while name not in weights and name in producer and seen < 4:
            node = producer[name]
            if node.op_type not in ("DequantizeLinear", "Transpose", "Cast", "Identity"):
                return None
            name, seen = node.input[0], seen + 1
        return name if name in weights else None

    flops = weight_bytes = act_bytes = 0
    counted, by_kind, missing = set(), {}, []
    for node in model.graph.node:
        src = weight_source(node.input[0]) if node.op_type == "Gather" else None
        if src is not None and node.output[0] in shapes:  # a lookup table: only the rows read count
            weight_bytes += int(np.prod(shapes[node.output[0]])) * itemsize[src]
            counted.add(src)
            continue
        kind = HEAVY_OPS.get(node.op_type)
        if kind is None:
            continue
        a_name, b_name = node.input[0], node.input[3 if node.op_type in ("QLinearConv", "QLinearMatMul") else 1]
        out = shapes.get(node.output[0])
        a, b = shapes.get(a_name), shapes.get(b_name)
        if out is None or a is None or b is None:
            missing.append(node.name or node.op_type)
            continue
        if kind == "conv":  # out (N, Co, Ho, Wo), weight (Co, Ci/g, kh, kw)
            macs = int(np.prod(out)) * int(np.prod(b[1:]))
        elif kind == "gemm":
            attrs = {at.name: at.i for at in node.attribute}
            k = a[0] if attrs.get("transA") else a[1]
            macs = int(np.prod(out)) * k
        else:  # matmul: out (..., M, N), contraction over a's last dim
            macs = int(np.prod(out)) * a[-1]
        flops += 2 * macs
        by_kind[node.op_type] = by_kind.get(node.op_type, 0) + 2 * macs
        for name in (a_name, b_name):
            src = weight_source(name)
            if src is not None:
                if src not in counted:
                    counted.add(src)
                    weight_bytes += int(np.prod(shapes[src])) * itemsize[src]
            elif name in shapes:
                act_bytes += int(np.prod(shapes[name])) * 4
        act_bytes += int(np.prod(out)) * 4
    return {"batch": batch, "flops": flops, "weight_bytes": weight_bytes, "activation_bytes": act_bytes,
            "by_op": by_kind, "nodes_without_shape": missing}


# ------------------------------------------------------------------------------------------ machine peak
PEAK_CODE = """
import time, statistics, numpy as np
n = 2048
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32); b = a.T.copy(); c = a @ b
t = []
for _ in range(7):
    s = time.perf_counter(); np.matmul(a, b, out=c); t.append(time.perf_counter() - s)
x = np.ones(64 << 20, dtype=np.float32); y = np.empty_like(x); np.copyto(y, x)
m = []
for _ in range(7):
    s = time.perf_counter(); np.copyto(y, x); m.append(time.perf_counter() - s)
print(2 * n ** 3 / statistics.median(t) / 1e9, 2 * x.nbytes / statistics.median(m) / 1e9)
"""


def machine_peak(threads: int) -> tuple[float, float]:
    """(GFLOP/s of a float32 matrix product, GB/s of a large copy) with ``threads`` BLAS threads."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", PEAK_CODE], env=env, capture_output=True, text=True, check=True)
    gflops, gbs = map(float, out.stdout.split())
    return gflops, gbs


# ------------------------------------------------------------------------------------------ encoder
def encoder_seconds(path, threads: int, batch: int, rounds: int) -> list[float]:
    """Seconds per item of the graph under onnxruntime on random input, after a warm-up."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in inp.shape]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape, dtype=np.uint8) if "uint8" in inp.type else rng.random(shape, dtype=np.float32)
    feed = {inp.name: x}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) / batch)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graph", type=Path, required=True, help="an ONNX graph, e.g. BUNDLE/image_encoder.onnx")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=20, help="timed runs per (threads, batch) and pass")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--load-limit", type=float, default=1.0)
    ap.add_argument("--allow-load", action="store_true", help="measure even above --load-limit (marked)")
    args = ap.parse_args(argv)

    load0 = check_load(args.load_limit, args.allow_load)
    others = OtherLoad()
    cost = graph_cost(args.graph, 1)
    peaks = {t: [] for t in args.threads}
    enc = {(t, b): [] for t in args.threads for b in args.batch}
    for _ in range(3):  # alternate peak and encoder measurements so that both see the same machine
        for t in args.threads:
            peaks[t].append(machine_peak(t))
            for b in args.batch:
                enc[(t, b)] += encoder_seconds(args.graph, t, b, max(2, args.rounds // (3 if b == 1 else 12)))
    rows = []
    for t in args.threads:
        g = statistics.median(p[0] for p in peaks[t])
        bw = statistics.median(p[1] for p in peaks[t])
        ridge = g / bw
        for b in args.batch:
            s = enc[(t, b)]
            med = statistics.median(s)
            achieved = cost["flops"] / med / 1e9
            rows.append({"threads": t, "batch": b, "ms_per_item": med * 1e3, "ms_min": min(s) * 1e3,
                         "ms_max": max(s) * 1e3, "gflops": achieved, "peak_gflops": g,
                         "peak_gflops_range": [min(p[0] for p in peaks[t]), max(p[0] for p in peaks[t])],
                         "copy_gbs": bw, "ridge_flop_per_byte": ridge, "fraction_of_peak": achieved / g})
    intensity_w = cost["flops"] / max(1, cost["weight_bytes"])
    intensity_all = cost["flops"] / max(1, cost["weight_bytes"] + cost["activation_bytes"])
    load1, other = load_time(), others.cores()  # load1 counts this bench's own threads; `other` does not
    flag = "" if load0 <= args.load_limit and other <= OtherLoad.LIMIT else "  ** TAKEN UNDER LOAD: do not publish **"
    print(f"$ {command_line()}\ngraph: {args.graph}")
    print(f"per item: {cost['flops'] / 1e9:.3f} GFLOP ({', '.join(f'{k} {v / 1e9:.3f}' for k, v in cost['by_op'].items())}); "
          f"weights {cost['weight_bytes'] / 1e6:.1f} MB; activations in+out of those nodes "
          f"{cost['activation_bytes'] / 1e6:.1f} MB")
    print(f"arithmetic intensity: {intensity_w:.0f} FLOP/B over weights (batch 1, weights read once), "
          f"{intensity_all:.1f} FLOP/B counting every activation too")
    if cost["nodes_without_shape"]:
        print(f"warning: {len(cost['nodes_without_shape'])} nodes without inferred shapes were not counted")
    print(f"load average: {load0:.2f} at start, {load1:.2f} at end (with this bench); other processes {other:.2f} cores{flag}")
    print("threads  batch  ms/item median (min-max)  GFLOP/s  peak GFLOP/s (matmul, min-max)  copy GB/s  "
          "ridge FLOP/B  of peak")
    for r in rows:
        lo, hi = r["peak_gflops_range"]
        print(f"{r['threads']:>7}  {r['batch']:>5}  {r['ms_per_item']:6.2f} ({r['ms_min']:.2f}-{r['ms_max']:.2f})"
              f"          {r['gflops']:7.1f}  {r['peak_gflops']:6.1f} ({lo:.1f}-{hi:.1f})"
              f"{'':14}{r['copy_gbs']:7.1f}  {r['ridge_flop_per_byte']:12.1f}  {r['fraction_of_peak']:6.1%}")
    if args.json:
        args.json.write_text(json.dumps({"graph": str(args.graph), "cost": cost, "rows": rows,
                                         "load": [load0, load1]}, indent=2))


if __name__ == "__main__":
    main()
