"""Evaluation of a trained model: cross-modal retrieval mAP (I2T, T2I, average; optionally mAP@k) on a split,
and image tagging metrics at per-label thresholds calibrated on the validation split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dagnn_runtime.metrics import calibrate_thresholds, cross_modal_map, tagging_metrics

SPLITS = ("train", "val", "test")


def split_metrics(model, data, split: str = "test", k: int | None = None) -> dict:
    """Retrieval mAP on ``split`` (queries and database both from it) and tagging metrics of the image
    label scores with thresholds calibrated on the validation split."""
    from .train import embed

    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    part = getattr(data, split)
    if len(part.bow) == 0:
        raise InputError(f"the {split} split is empty")
    out = embed(model, part.h_v, part.bow)
    y = part.y.numpy()
    result = {"split": split, "n": len(y), **cross_modal_map(out["v"], out["t"], y)}
    if k:
        at_k = cross_modal_map(out["v"], out["t"], y, k=k)
        result["map_at_k"] = {"k": int(k), **at_k}
    val_out = out if split == "val" else embed(model, data.val.h_v, data.val.bow)
    thresholds, _ = calibrate_thresholds(val_out["scores_v"], data.val.y.numpy())
    tagging = tagging_metrics(out["scores_v"], y, thresholds)
    tagging["thresholds"] = [float(x) if np.isfinite(x) else None for x in thresholds]
    result["tagging"] = tagging
    return result


def evaluate_run(run_dir, split: str = "test", k: int | None = None) -> dict:
    """Evaluate a run directory's model on one of its splits (``splits.json``), from the cached features
    (``config["features"]``) and the data set's bag of words. Keys: i2t, t2i, avg, map_at_k (with k), tagging."""
    from .train import Part, TrainingData, load_run, RunError
    from .features import load_features
    from dagnn_runtime.dataset import Dataset

    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    run_dir = Path(run_dir)
    model, config = load_run(run_dir)
    splits_path = run_dir / "splits.json"
    if not splits_path.is_file():
        raise RunError(f"run directory {run_dir} has no splits.json")
    rows = json.loads(splits_path.read_text(encoding="utf-8"))
    for key in ("data", "features"):
        if not config.get(key) or not Path(config[key]).exists():
            raise RunError(f"{run_dir / 'config.json'}: {key} {config.get(key)!r} is not available")
    dataset = Dataset.load(config["data"])
    if len(dataset.vocab) != config["vocab_size"]:
        raise RunError(f"{config['data']}: vocabulary has {len(dataset.vocab)} tags, the model expects "
                       f"{config['vocab_size']}")
    cache = load_features(config["features"])

    def part(name):
        missing = [r for r in rows.get(name, []) if r not in dataset.row_index]
        if missing:
            raise RunError(f"{splits_path}: {name} rows not in {config['data']}, e.g. {missing[:5]}")
        idx = [dataset.row_index[r] for r in rows.get(name, [])]
        h_v = torch.from_numpy(np.asarray(cache.lookup(rows[name]), dtype=np.float32))
        return Part(rows[name], h_v, torch.from_numpy(dataset.bow(idx)), torch.from_numpy(dataset.label_matrix(idx)))

    needed = {"val", split}
    parts = {name: part(name) for name in needed}
    data = TrainingData(dataset, None, parts.get("train"), parts["val"], parts.get("test"), None, None, None, None)
    return split_metrics(model, data, split, k=k)
