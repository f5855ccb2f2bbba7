"""Which image features to train DAGNN on: each backbone and fusion, its canonical-split mAP over seeds (with
and without mirror test-time augmentation) against what its image encoder costs per photo.

    python bench/backbone_study.py --features lite0=feats-lite0.npz --features lite1=feats-lite1.npz ... \
        [--seeds 0 1 2] [--jobs 2] [--out runs/backbones] [--time] [--rounds 15] [--plot pareto.png]

Each ``NAME=CACHE`` is a feature cache made with ``dagnn features --backbone B --flip`` (the mirrored photos'
features give the augmentation's figures without re-running the backbone). Every run is ``dagnn train
--preset mirflickr`` with GloVe label inputs and one thread, ``--jobs`` at a time; a run whose
``metrics.json`` exists is not trained again, so the study resumes. The selected epoch is the best on
validation; the mirror's figures come from the same selected model, its image embedding the mean of the
photo's and its mirror's (as ``dagnn export --mirror`` serves it). ``--time`` measures each cache's
backbone as an ONNX graph on one thread, batch 1, alternated round by round (with the mirror: batch 2).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import alternate, load_average  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared() -> Path:
    return Path(os.environ.get("DAGNN_SHARED", REPO.parent / "shared"))


def train(name: str, cache: Path, seed: int, out: Path) -> Path:
    run = out / f"{name}-seed{seed}"
    if (run / "metrics.json").is_file():
        return run
    data = shared() / "data" / "mirflickr25k"
    glove = shared() / "data" / "label_embeddings" / "mirflickr-glove6B.npy"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "dagnn_cli", "train", "--data", str(data), "--features", str(cache),
                    "--label-embeddings", str(glove), "--preset", "mirflickr", "--seed", str(seed), "--out",
                    str(run), "--set", "num_threads=1", "--no-progress"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    print(f"  {name} seed {seed}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return run


def mirrored_metrics(run: Path) -> dict:
    """Test and validation avg mAP of the run's selected model, each photo embedded as the mean of its own
    and its mirror's embedding."""
    import torch

    from dagnn_export.config import TrainConfig
    from dagnn_export.run import load_run, load_training_data
    from dagnn_runtime.metrics import cross_modal_map

    model, config = load_run(run)
    data = load_training_data(TrainConfig.from_dict(config))
    out = {}
    with torch.no_grad():
        for split in ("val", "test"):
            part = getattr(data, split)
            flipped = torch.from_numpy(data_cache(config).lookup(part.rows, flipped=True))
            v = (model.image_common(part.h_v) + model.image_common(flipped)) / 2
            t = model.text_common(part.bow, None)
            out[split] = cross_modal_map(v.numpy(), t.numpy(), part.y.numpy())["avg"]
    return out


_caches: dict = {}


def data_cache(config: dict):
    from dagnn_export.features import load_features

    if config["features"] not in _caches:
        _caches[config["features"]] = load_features(config["features"])
    return _caches[config["features"]]


def encoder_ms(caches: dict, rounds: int) -> dict:
    """name → (Stat of one photo, Stat of a photo and its mirror), seconds, one thread, alternated."""
    import onnxruntime as ort

    from dagnn_export.backbones import build_backbone, export_onnx
    from dagnn_export.features import load_features

    sides, folder = {}, Path(tempfile.mkdtemp(prefix="dagnn-study-"))
    for name, path in caches.items():
        cache = load_features(path)
        backbone = build_backbone(cache.backbone)
        backbone.image_size = cache.image_size
        graph = export_onnx(backbone, folder / f"{name}.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        for batch, key in ((1, name), (2, f"{name}+mirror")):
            pixels = rng.integers(0, 256, (batch, cache.image_size, cache.image_size, 3), dtype=np.uint8)
            sides[key] = (lambda s=session, p=pixels: s.run(None, {"pixels": p}))
    stats = alternate(sides, rounds, warmup=3, inner=5, inner_median=True, settle=0.05)
    return {name: (stats[name], stats[f"{name}+mirror"]) for name in caches}


def summarise(results: dict, times: dict | None) -> list[dict]:
    rows = []
    for name, runs in results.items():
        for mirror in (False, True):
            test = [r["mirror"]["test"] if mirror else r["test"] for r in runs]
            val = [r["mirror"]["val"] if mirror else r["val"] for r in runs]
            row = {"name": name + (" + mirror" if mirror else ""), "seeds": len(runs),
                   "test": statistics.mean(test), "test_std": statistics.pstdev(test),
                   "val": statistics.mean(val), "val_std": statistics.pstdev(val), "per_seed": test}
            if times:
                stat = times[name][1 if mirror else 0]
                row.update(ms=stat.median * 1e3, ms_min=stat.min * 1e3, ms_max=stat.max * 1e3)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| features | seeds | test avg mAP (per seed) | mean ± std | val avg (selection) | encoder ms/photo |",
             "|---|---|---|---|---|---|"]
    best = max(rows, key=lambda r: r["val"])
    for r in rows:
        ms = f"{r['ms']:.2f} ({r['ms_min']:.2f}–{r['ms_max']:.2f})" if "ms" in r else "—"
        mark = "**" if r is best else ""
        lines.append(f"| {mark}{r['name']}{mark} | {r['seeds']} | {' / '.join(f'{v:.4f}' for v in r['per_seed'])} | "
                     f"{r['test']:.4f} ± {r['test_std']:.4f} | {r['val']:.4f} ± {r['val_std']:.4f} | {ms} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from dagnn_runtime.plots import new_figure, save_png

    fig, (ax,) = new_figure(6.4, 4.2)
    pts = sorted((r for r in rows if "ms" in r), key=lambda r: r["ms"])
    front, best = [], -1.0
    for r in pts:  # the Pareto front: no cheaper point is as good on validation
        if r["val"] > best:
            front.append(r)
            best = r["val"]
    for r in pts:
        ax.errorbar(r["ms"], r["test"], yerr=r["test_std"], fmt="o" if "mirror" not in r["name"] else "s",
                    color="#1f77b4" if r in front else "#999999", capsize=3)
        ax.annotate(r["name"].replace("efficientnet_", ""), (r["ms"], r["test"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)
    ax.plot([r["ms"] for r in front], [r["test"] for r in front], "-", color="#1f77b4", lw=1,
            label="Pareto front (chosen on validation)")
    ax.set_xlabel("image encoder ms per photo (1 thread, batch 1)")
    ax.set_ylabel("canonical test avg mAP (mean ± std over seeds)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    save_png(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", action="append", required=True, help="NAME=CACHE.npz (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/backbones"))
    ap.add_argument("--time", action="store_true", help="also time each backbone's graph (machine otherwise idle)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    caches = dict(item.split("=", 1) for item in args.features)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average {load_average():.2f} at the start", file=sys.stderr)
    jobs = [(name, Path(path), seed) for seed in args.seeds for name, path in caches.items()]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: train(*job, args.out), jobs))
    results: dict = {name: [] for name in caches}
    for (name, _, _), run in zip(jobs, runs):
        metrics = json.loads((run / "metrics.json").read_text())
        results[name].append({"test": metrics["avg"], "val": metrics["val"]["avg"], "mirror": mirrored_metrics(run)})
    times = encoder_ms(caches, args.rounds) if args.time else None
    rows = summarise(results, times)
    print(table(rows))
    print(f"load average {load_average():.2f} at the end", file=sys.stderr)
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
