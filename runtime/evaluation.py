"""Re-measuring a bundle on a data set with the runtime alone: cross-modal mAP and tagging metrics, so that
a bundle's claimed figures can be checked without torch."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .constants import SPLITS
from .errors import DatasetError, InputError, positive_int



def evaluate_bundle(model, data, split: str = "test", k: int | None = None, batch_size: int = 32,
                    on_progress: Callable[[int], None] | None = None, plots=None) -> dict:
    """Retrieval mAP (I2T, T2I, average; also at ``k`` when given) and tagging metrics of ``model`` on one
    split of the data set folder ``data``, split the way the bundle's training config split it.
    ``on_progress(n)`` is called as images are encoded. Infinite thresholds are reported as None.
    With ``plots`` (a folder), the figures of ``plots.write_plots`` are written there too and listed
    under ``result["plots"]``."""
    from .dataset import Dataset, bag_of_words
    from .metrics import cross_modal_map, tagging_metrics, thresholds_to_json

    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if k is not None:
        k = positive_int(k, "k")
    ds = Dataset.load(Path(data))
    if set(ds.labels) != set(model.labels):
        raise DatasetError(f"{data}/labels.txt has other labels than the bundle "
                           f"({sorted(set(ds.labels) ^ set(model.labels))[:5]})")
    config = model.manifest.get("config", {})  # the training config: split the data the same way
    splits = ds.splits(seed=int(config.get("split_seed", 0)), val_fraction=float(config.get("val_fraction", 0.1)))
    idx = getattr(splits, split)
    if len(idx) == 0:
        raise DatasetError(f"the {split} split of {data} is empty")
    paths = [ds.image_path(i) for i in idx]
    image_emb = np.empty((len(idx), model.embedding_dim), dtype=np.float32)
    for start in range(0, len(idx), batch_size):
        chunk = paths[start:start + batch_size]
        image_emb[start:start + len(chunk)] = model.encode_images(chunk, batch_size=batch_size)
        if on_progress:
            on_progress(len(chunk))
    vocab_index = {t: j for j, t in enumerate(model.vocab)}
    text_emb = model.encode_bow(bag_of_words([ds.pairs[i].tags for i in idx], vocab_index))
    y = ds.label_matrix(idx)[:, [ds.label_index[name] for name in model.labels]]
    result = {"split": split, "n": int(len(idx)), **cross_modal_map(image_emb, text_emb, y)}
    if k:
        result["map_at_k"] = {"k": int(k), **cross_modal_map(image_emb, text_emb, y, k=k)}
    image_scores = model.score_labels(image_emb)
    tagging = tagging_metrics(image_scores, y, model.thresholds)
    tagging["thresholds"] = thresholds_to_json(model.thresholds)
    result["tagging"] = tagging
    if plots is not None:
        from .plots import write_plots

        train_y = ds.label_matrix(splits.train)[:, [ds.label_index[name] for name in model.labels]]
        inputs = _plot_inputs(model, config, f"{Path(model.source).name}, {split} split ({len(idx)} pairs)",
                              image_emb, text_emb, y, image_scores, train_y)
        result["plots"] = {name: str(path) for name, path in write_plots(inputs, plots).items()}
    return result


def _plot_inputs(model, config: dict, title: str, image_emb, text_emb, y, image_scores, train_y):
    """A bundle holds Z but not the GNN's inputs, so its t-SNE shows Z alone; the label graph is rebuilt
    from the training split's labels with the bundle's tau, as training built it."""
    from .label_graph import correlation_matrices
    from .plots import PlotInputs

    tau = float(config.get("tau") or 0.3)
    edges = correlation_matrices(train_y, tau, float(config.get("p", 0.5)))["B"] if len(train_y) else None
    return PlotInputs(
        title=title, labels=list(model.labels), image_emb=image_emb, text_emb=text_emb, y=y,
        image_scores=image_scores, thresholds=np.asarray(model.thresholds),
        classifiers=np.asarray(model.classifiers),
        classifiers_caption="classifiers Z of the bundle (the GNN's output; its inputs are not in a bundle)",
        edges=edges, edges_caption=f"lines: label pairs with P(Li|Lj) ≥ {tau:g} or P(Lj|Li) ≥ {tau:g} "
                                   "on the training split (the GNN's graph)" if edges is not None else "")


def claimed_metrics(model, split: str = "test") -> dict:
    """What the bundle's manifest claims for ``split``: ``i2t``/``t2i``/``avg`` and ``tagging.<metric>``."""
    metrics = model.manifest.get("metrics", {})
    return {**metrics.get(split, {}),
            **{f"tagging.{key}": v for key, v in metrics.get(f"{split}_tagging", {}).items()}}
