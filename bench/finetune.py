"""Fine-tuning the backbone's last k blocks on MIRFlickr: k = 0 (frozen features) against k = 1, 2, 3, over
seeds; prints a markdown table of test mAP (mean ± std) of the best-VALIDATION epoch of every run.

    python bench/finetune.py --features FEATS.npz --trunk-features TRUNK.npz [--ks 0 1 2 3] \
        [--seeds 0 1 2] [--ft-epochs 3] [--out RUNS_DIR]

TRUNK.npz comes from ``dagnn features --trunk-blocks 3 --flip`` (maps before the last 3 blocks, and those of
each photo mirrored). Each seed first trains the frozen-feature model (k = 0, the ``mirflickr`` preset);
every k > 0 then starts from it and trains the last k blocks with DAGNN for ``--ft-epochs`` epochs (its
starting point competes in the validation selection). A k > 0 run's time includes its k = 0 phase. Runs are
run directories under --out named ``k{k}-s{seed}``; one whose ``metrics.json`` exists is not trained again.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ablation import default_shared

REPO = Path(__file__).resolve().parents[1]


def run_one(k: int, seed: int, args) -> dict | None:
    from dagnn_export.config import make_config
    from dagnn_export.train import train_run

    out = Path(args.out) / f"k{k}-s{seed}"
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    if args.no_train:
        return None
    common = dict(data=str(args.data), label_embeddings=str(args.label_embeddings), seed=seed,
                  num_threads=args.threads)
    if k == 0:
        cfg = make_config("mirflickr", features=str(args.features), **common)
    else:
        start = Path(args.out) / f"k0-s{seed}"
        cfg = make_config("mirflickr", features=str(args.trunk_features), finetune_backbone=k, init_from=str(start),
                          epochs=args.ft_epochs, patience=args.ft_epochs, backbone_lr=args.backbone_lr,
                          flip=not args.no_flip, **common)
    t0 = time.time()
    metrics = train_run(cfg, out, progress=False, log=lambda *_: None)
    print(f"  k={k} seed {seed}: test avg {metrics['avg']:.4f} (val {metrics['val']['avg']:.4f}, epoch "
          f"{metrics['selected_epoch']}/{metrics['epochs_run']}, {time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    return metrics


def table(results: dict, base_seconds: dict) -> str:
    def ms(values):
        return f"{np.mean(values):.4f} ± {np.std(values):.4f}"

    lines = ["| k (blocks trained) | seeds | I2T | T2I | average | val average | selected epoch | minutes/run (incl. k=0) |",
             "|---|---|---|---|---|---|---|---|"]
    for k, runs in results.items():
        minutes = [(r["train_seconds"] + (base_seconds[r["seed"]] if k else 0)) / 60 for r in runs]
        lines.append(f"| {k} | {', '.join(str(r['seed']) for r in runs)} | {ms([r['i2t'] for r in runs])} | {ms([r['t2i'] for r in runs])} | "
                     f"{ms([r['avg'] for r in runs])} | {ms([r['val']['avg'] for r in runs])} | "
                     f"{np.mean([r['selected_epoch'] for r in runs]):.1f} | {np.mean(minutes):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    shared = default_shared()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True, type=Path, help="pooled feature cache (k = 0)")
    parser.add_argument("--trunk-features", required=True, type=Path, help="trunk maps (`--trunk-blocks 3 --flip`)")
    parser.add_argument("--data", type=Path, default=shared / "data" / "mirflickr25k")
    parser.add_argument("--label-embeddings", type=Path,
                        default=shared / "data" / "label_embeddings" / "mirflickr-glove6B.npy")
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ft-epochs", type=int, default=3)
    parser.add_argument("--backbone-lr", type=float, default=2e-5)
    parser.add_argument("--no-flip", action="store_true", help="do not train on the mirrored photos' maps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "finetune")
    parser.add_argument("--no-train", action="store_true", help="only tabulate the runs already in --out")
    args = parser.parse_args(argv)
    ks = sorted(set(args.ks) | {0})  # every k > 0 starts from the k = 0 run of its seed
    results = {k: [] for k in ks}
    for seed in args.seeds:
        for k in ks:
            metrics = run_one(k, seed, args)
            if metrics is not None:
                results[k].append(metrics)
    base = {r["seed"]: r["train_seconds"] for r in results[0]}
    print(f"{args.data.name}, test split of its split file, seeds {args.seeds}; fine-tuning {args.ft_epochs} epochs "
          f"at backbone lr {args.backbone_lr:g}{'' if args.no_flip else ', with mirrored photos'}; test mAP of the "
          f"best-validation epoch, mean ± std over seeds\n")
    print(table({k: v for k, v in results.items() if k in args.ks and v}, base))


if __name__ == "__main__":
    main()
