"""Linear baselines on the same split and features as DAGNN: CCA, and a plain two-tower model with a linear
classifier; prints a markdown table of test mAP, each setting chosen on validation.

    python bench/baselines.py --features FEATS.npz [--data DIR] [--seeds 0 1 2]

- **CCA**: regularised canonical correlation between the z-scored image features and the tag bag of words;
  queries and database are compared by cosine in the top-d canonical space. d and the ridge term are chosen
  on validation mAP.
- **Two-tower, linear**: one linear map per modality into a 1024-d space and one shared linear classifier
  Z (c × 1024), trained with DAGNN's L_cla (Eq. 9, cosine scores) only; no GNN, no adversary, no hidden
  layers. The epoch is chosen on validation mAP; mean ± std over seeds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ablation import default_shared


def load(args):
    from dagnn_export.features import load_features
    from dagnn_runtime.dataset import Dataset

    dataset = Dataset.load(args.data)
    splits = dataset.splits(seed=0, val_fraction=0.1)
    cache = load_features(args.features)
    parts = {}
    for name in ("train", "val", "test"):
        idx = getattr(splits, name)
        parts[name] = (cache.lookup([dataset.pairs[i].row for i in idx]), dataset.bow(idx).astype(np.float32),
                       dataset.label_matrix(idx))
    return parts


def _inverse_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T


def cca(parts, dims=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64), ridges=(1e-2, 1e-1, 1.0, 10.0)) -> dict:
    from dagnn_runtime.metrics import cross_modal_map

    x, t, _ = parts["train"]
    mx, sx = x.mean(0), x.std(0) + 1e-6
    mt = t.mean(0)

    def centre(p):
        return (p[0] - mx) / sx, p[1] - mt

    xc, tc = centre(parts["train"])
    n = len(xc)
    cxx, ctt, cxt = xc.T @ xc / n, tc.T @ tc / n, xc.T @ tc / n
    best = None
    for ridge in ridges:
        wx = _inverse_sqrt(cxx + ridge * np.eye(len(cxx)) * np.trace(cxx) / len(cxx))
        wt = _inverse_sqrt(ctt + ridge * np.eye(len(ctt)) * np.trace(ctt) / len(ctt))
        u, s, vt = np.linalg.svd(wx @ cxt @ wt, full_matrices=False)
        for d in dims:
            px, pt = wx @ u[:, :d], wt @ vt[:d].T
            vx, vtt = centre(parts["val"])
            val = cross_modal_map(vx @ px, vtt @ pt, parts["val"][2])["avg"]
            if best is None or val > best[0]:
                best = (val, ridge, d, px, pt)
    val, ridge, d, px, pt = best
    ex, et = centre(parts["test"])
    return {"val": val, "ridge": ridge, "d": d, **cross_modal_map(ex @ px, et @ pt, parts["test"][2])}


def two_tower(parts, seed: int, epochs: int = 40, dim: int = 1024, lr: float = 2e-4) -> dict:
    import torch
    from torch.nn import functional as F

    from dagnn_export.losses import classification_loss
    from dagnn_runtime.metrics import cross_modal_map

    torch.manual_seed(seed)
    x, t, y = (torch.from_numpy(a) for a in parts["train"])
    mx, sx = x.mean(0), x.std(0).clamp_min(1e-3)
    image, text = torch.nn.Linear(x.shape[1], dim), torch.nn.Linear(t.shape[1], dim)
    z = torch.nn.Parameter(torch.randn(y.shape[1], dim) / dim ** 0.5)
    params = [*image.parameters(), *text.parameters(), z]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))

    def embed(p):
        with torch.no_grad():
            return (image((torch.from_numpy(p[0]) - mx) / sx).numpy(), text(torch.from_numpy(p[1])).numpy())

    def scores(a):
        return F.normalize(a, dim=1) @ F.normalize(z, dim=1).T

    best = (-1.0, 0, None)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 100):
            idx = order[start:start + 100]
            loss = (classification_loss(scores(image((x[idx] - mx) / sx)), y[idx])
                    + classification_loss(scores(text(t[idx])), y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        val = cross_modal_map(*embed(parts["val"]), parts["val"][2])["avg"]
        if val > best[0]:
            best = (val, epoch, embed(parts["test"]))
    val, epoch, (ex, et) = best
    return {"val": val, "epoch": epoch, **cross_modal_map(ex, et, parts["test"][2])}


def main(argv=None) -> None:
    shared = default_shared()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True, type=Path, help="pooled feature cache")
    parser.add_argument("--data", type=Path, default=shared / "data" / "mirflickr25k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", choices=("cca", "two-tower"), default=["cca", "two-tower"])
    args = parser.parse_args(argv)
    parts = load(args)
    print(f"{args.data.name}, test split of its split file; each setting chosen on validation\n")
    print("| model | I2T | T2I | average | val average | chosen on validation |\n|---|---|---|---|---|---|")
    if "cca" in args.models:
        c = cca(parts)
        print(f"| CCA (image features ↔ tag bag of words) | {c['i2t']:.4f} | {c['t2i']:.4f} | {c['avg']:.4f} | "
              f"{c['val']:.4f} | d {c['d']}, ridge {c['ridge']:g} |", flush=True)
    if "two-tower" not in args.models:
        return
    towers = [two_tower(parts, seed) for seed in args.seeds]

    def ms(key):
        values = [r[key] for r in towers]
        return f"{np.mean(values):.4f} ± {np.std(values):.4f}"

    print(f"| two-tower, linear maps + linear classifier, L_cla, seeds {args.seeds} | {ms('i2t')} | {ms('t2i')} | "
          f"{ms('avg')} | {ms('val')} | epoch {np.mean([r['epoch'] for r in towers]):.0f} of 40 (mean) |")


if __name__ == "__main__":
    main()
