"""Ablation of DAGNN on MIRFlickr: the paper's variants DAGNN-1…5, GAT vs GCN, with vs without layer
aggregation, each over several seeds; prints a markdown table of test mAP (mean ± std) of the
best-VALIDATION epoch of every run.

    python bench/ablation.py --features FEATS.npz [--data DIR] [--label-embeddings E.npy] \
        [--seeds 0 1 2] [--only dagnn,dagnn-3] [--out RUNS_DIR] [--set key=value ...] [--plot-layers PNG]

Every run is a normal run directory under --out (default ``runs/ablation``); a run whose
``metrics.json`` exists is not trained again, so an interrupted ablation resumes. Runs are sequential.
``--plot-layers`` draws test and validation avg mAP against the number of GNN layers (the paper's Fig. 4
varies them too) from the ``layers-k`` settings and the full model (4 layers) among the runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# key -> (table label, variant, config overrides); "dagnn" is the full model with the preset's defaults.
SETTINGS = {
    "dagnn": ("DAGNN (GAT, 4 layers, aggregation)", "dagnn", {}),
    "dagnn-1": ("DAGNN-1 (no L_cla)", "dagnn-1", {}),
    "dagnn-2": ("DAGNN-2 (no L_mdi)", "dagnn-2", {}),
    "dagnn-3": ("DAGNN-3 (no L_adv)", "dagnn-3", {}),
    "dagnn-4": ("DAGNN-4 (one discriminator on v vs t)", "dagnn-4", {}),
    "dagnn-5": ("DAGNN-5 (linear classifier, no GNN)", "dagnn-5", {}),
    "gcn": ("DAGNN with GCN (tau 0.4, p 0.5)", "dagnn", {"gnn": "gcn"}),
    "no-agg": ("DAGNN without layer aggregation", "dagnn", {"layer_aggregation": False}),
    **{f"layers-{k}": (f"DAGNN with {k} GNN layer{'s' if k > 1 else ''}", "dagnn", {"gnn_layers": k})
       for k in (1, 2, 3, 5)},
}


def default_shared() -> Path:
    return Path(os.environ.get("DAGNN_SHARED", REPO.parent / "shared"))


def run_one(key, seed, args, extra, text_mlp_from=None) -> dict:
    from dagnn_export.config import make_config
    from dagnn_export.train import train_run

    out = Path(args.out) / f"{key}-seed{seed}"
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    _, variant, overrides = SETTINGS[key]
    cfg = make_config("mirflickr", variant, data=str(args.data), features=str(args.features),
                      label_embeddings=str(args.label_embeddings) if args.label_embeddings else None,
                      seed=seed, **{**extra, **overrides})
    if text_mlp_from is not None and cfg.freeze_text_mlp:
        # The frozen pretrained text MLP depends only on the seed: reuse the full model's, do not redo it.
        cfg.text_mlp_init = str(text_mlp_from)
    t0 = time.time()
    metrics = train_run(cfg, out, progress=False, log=lambda *_: None)
    print(f"  {key} seed {seed}: test avg {metrics['avg']:.4f} (val {metrics['val']['avg']:.4f}, "
          f"epoch {metrics['selected_epoch']}/{metrics['epochs_run']}, {time.time() - t0:.0f}s)",
          file=sys.stderr, flush=True)
    return metrics


def table(results: dict) -> str:
    def ms(values):
        return f"{np.mean(values):.4f} ± {np.std(values):.4f}"

    full = results.get("dagnn", [])
    lines = ["| setting | I2T | T2I | average | val average | average vs full model, per seed | selected epoch | "
             "seconds/run |", "|---|---|---|---|---|---|---|---|"]
    for key, runs in results.items():
        # seed by seed (the lists follow the seeds' order): with a data fraction each seed has its own pairs
        diffs = [r["avg"] - f["avg"] for r, f in zip(runs, full)]
        vs_full = f"{np.mean(diffs):+.4f} ± {np.std(diffs):.4f}" if key != "dagnn" and diffs else ""
        lines.append(f"| {SETTINGS[key][0]} | {ms([r['i2t'] for r in runs])} | {ms([r['t2i'] for r in runs])} | "
                     f"{ms([r['avg'] for r in runs])} | {ms([r['val']['avg'] for r in runs])} | {vs_full} | "
                     f"{np.mean([r['selected_epoch'] for r in runs]):.0f} | "
                     f"{np.mean([r['train_seconds'] for r in runs]):.0f} |")
    return "\n".join(lines)


def plot_layers(results: dict, path: Path) -> None:
    """Mean ± std over seeds of test and validation avg mAP for each number of GNN layers run."""
    from dagnn_runtime.plots import new_figure, save_png

    by_depth = {SETTINGS[key][2].get("gnn_layers", 4): runs for key, runs in results.items()
                if key == "dagnn" or key.startswith("layers-")}
    depths = sorted(by_depth)
    fig, (ax,) = new_figure(5.5, 3.6)
    for split, label, marker in (("test", "test", "o"), ("val", "validation", "s")):
        values = [[r["avg"] if split == "test" else r["val"]["avg"] for r in by_depth[k]] for k in depths]
        ax.errorbar(depths, [np.mean(v) for v in values], yerr=[np.std(v) for v in values], marker=marker,
                    capsize=3, label=f"{label} avg mAP")
    seeds = min(len(by_depth[k]) for k in depths)
    ax.set(xlabel="GNN layers (GAT, layer aggregation)", ylabel="avg mAP (I2T, T2I)", xticks=depths,
           title=f"MIRFlickr: mean ± std over {seeds} seeds, each run selected on validation")
    ax.title.set_fontsize(9)
    ax.legend()
    ax.grid(alpha=0.3)
    save_png(fig, path)


def main(argv=None) -> None:
    from dagnn_export.config import default_values, parse_override

    shared = default_shared()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True, type=Path, help="EfficientNet-Lite0 (or other) feature cache")
    parser.add_argument("--data", type=Path, default=shared / "data" / "mirflickr25k")
    parser.add_argument("--label-embeddings", type=Path,
                        default=shared / "data" / "label_embeddings" / "mirflickr-glove6B.npy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SETTINGS)}")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ablation")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config key=value for all runs")
    parser.add_argument("--plot-layers", type=Path, help="PNG of avg mAP against the number of GNN layers")
    args = parser.parse_args(argv)
    fields = default_values()
    extra = dict(parse_override(fields, item) for item in args.overrides)
    keys = [k.strip() for k in args.only.split(",") if k.strip()] or list(SETTINGS)
    unknown = [k for k in keys if k not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    keys = sorted(keys, key=list(SETTINGS).index)  # the full model first: the others reuse its text MLP
    results = {key: [] for key in keys}
    for seed in args.seeds:  # seed-major, so an interrupted ablation still has every setting
        source = Path(args.out) / f"dagnn-seed{seed}"
        for key in keys:
            reuse = source if key != "dagnn" and (source / "model.pt").is_file() else None
            results[key].append(run_one(key, seed, args, extra, reuse))
        print(table({k: v for k, v in results.items() if v}), file=sys.stderr, flush=True)
    print(f"{args.data.name}, test split of its split file, seeds {args.seeds}"
          f"{', with ' + ', '.join(args.overrides) if args.overrides else ''}; test mAP of the "
          f"best-validation epoch, mean ± std over seeds\n")
    print(table(results))
    if args.plot_layers:
        plot_layers(results, args.plot_layers)


if __name__ == "__main__":
    main()
