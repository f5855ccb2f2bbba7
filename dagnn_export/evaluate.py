"""Evaluation of a trained model: cross-modal retrieval mAP (I2T, T2I, average; optionally mAP@k) on a split,
and image tagging metrics at per-label thresholds calibrated on the validation split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dagnn_runtime.constants import SPLITS
from dagnn_runtime.dataset import Dataset
from dagnn_runtime.errors import InputError
from dagnn_runtime.metrics import (calibrate_thresholds, cross_modal_map, tagging_metrics, thresholds_from_json,
                                   thresholds_to_json)

from .errors import RunError
from .files import read_json
from .model import DAGNN
from .run import Part, TrainingData, load_run, make_part


@torch.no_grad()
def embed(model: DAGNN, h_v: torch.Tensor, bow: torch.Tensor, h_t: torch.Tensor | None = None,
          batch: int = 2048) -> dict:
    """v, t, image and text label scores (numpy) of a split, in eval mode."""
    was_training = model.training
    model.eval()
    z = model.classifiers()
    parts = {"v": [], "t": [], "scores_v": [], "scores_t": []}
    for start in range(0, len(bow), batch):
        sl = slice(start, start + batch)
        v = model.image_common(h_v[sl])
        t = model.text_common(bow[sl], None if h_t is None else h_t[sl])
        for key, val in (("v", v), ("t", t), ("scores_v", model.scores(v, z)), ("scores_t", model.scores(t, z))):
            parts[key].append(val)
    model.train(was_training)
    return {k: torch.cat(v).numpy() if v else np.zeros((0, 0), np.float32) for k, v in parts.items()}


def retrieval_scores(model: DAGNN, part: Part, h_t=None) -> dict:
    out = embed(model, part.h_v, part.bow, h_t)
    return cross_modal_map(out["v"], out["t"], part.y.numpy())


def split_metrics(model, data: TrainingData, split: str = "test", k: int | None = None) -> dict:
    """Retrieval mAP on ``split`` (queries and database both from it) and tagging metrics of the image
    label scores with thresholds calibrated on the validation split."""
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
    tagging["thresholds"] = thresholds_to_json(thresholds)
    result["tagging"] = tagging
    return result


def evaluate_run(run_dir, split: str = "test", k: int | None = None, plots=None, figures=None) -> dict:
    """Evaluate a run directory's model on one of its splits (``splits.json``), from the cached features
    (``config["features"]``) and the data set's bag of words. Keys: i2t, t2i, avg, map_at_k (with k), tagging;
    with ``plots`` (a folder) also the figures written there (``plots``; ``figures``: which, default all)."""
    from .features import load_features

    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    run_dir = Path(run_dir)
    model, config = load_run(run_dir)
    splits_path = run_dir / "splits.json"
    if not splits_path.is_file():
        raise RunError(f"run directory {run_dir} has no splits.json")
    rows = read_json(splits_path, RunError)
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
        return make_part(dataset, [dataset.row_index[r] for r in rows.get(name, [])], cache)

    parts = {name: part(name) for name in {"val", split}}
    data = TrainingData(dataset, None, parts.get("train"), parts["val"], parts.get("test"), None, None, None, None)
    result = split_metrics(model, data, split, k=k)
    if plots is not None:
        from dagnn_runtime.plots import write_plots

        inputs = run_plot_inputs(model, config, run_dir, getattr(data, split), dataset.labels,
                                 thresholds_from_json(result["tagging"]["thresholds"]),
                                 f"{run_dir.name}, {split} split ({result['n']} pairs)")
        result["plots"] = {name: str(path) for name, path in write_plots(inputs, plots, figures).items()}
    return result


def run_plot_inputs(model: DAGNN, config: dict, run_dir: Path, part: Part, labels, thresholds, title: str):
    """The figures' inputs for a run. "Without the GNN" can only be shown honestly from one run as the GNN's
    own input vectors Q (the label word vectors): the paper's Fig. 5(b) instead trains a second model whose
    classifiers are free parameters (our DAGNN-5 variant)."""
    from dagnn_runtime.plots import PlotInputs

    out = embed(model, part.h_v, part.bow)
    with torch.no_grad():
        z = model.classifiers().numpy()
    graph = read_json(run_dir / "label_graph.json", RunError) if (run_dir / "label_graph.json").is_file() else {}
    direction = config.get("graph_direction", "given")
    baseline, baseline_caption = None, ""
    if model.gnn is None:
        z_caption = "classifiers Z, free parameters (DAGNN-5: no GNN)"
    else:
        z_caption = f"classifiers Z = {config.get('gnn', 'gat').upper()}-GNN(Q, label graph), trained"
        if config.get("label_embeddings"):
            baseline = model.label_embeddings.numpy()
            baseline_caption = ("label word vectors Q, the GNN's input (no GNN). Not the paper's Fig. 5(b), "
                                "which trains a second model with free classifiers")
        else:
            z_caption += "; Q is one-hot, so there is no 'without the GNN' view"
    edges = np.asarray(graph["B"]) if "B" in graph else None
    tau = graph.get("tau")
    return PlotInputs(
        title=title, labels=list(labels), image_emb=out["v"], text_emb=out["t"], y=part.y.numpy(),
        image_scores=out["scores_v"], thresholds=thresholds, classifiers=z, classifiers_caption=z_caption,
        edges=edges, edges_caption=(f"lines: the GNN's label graph, P(Li|Lj) ≥ {tau:g} in either direction "
                                    f"(training labels; the GNN reads it '{direction}')") if edges is not None else "",
        baseline=baseline, baseline_caption=baseline_caption,
        history=read_json(run_dir / "history.json", RunError) if (run_dir / "history.json").is_file() else None)
