"""The demo's stages after the index is built: example queries and tagging, test mAP against random
ranking, and the training curves and figures for the report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dagnn_runtime.dataset import Dataset
from dagnn_runtime.metrics import cross_modal_map

from . import render
from .report import FILES_DIR

QUERY_PHOTO = "im8166.jpg"      # held-out lake at sunset: Image2Text and Image→Image
TAG_PHOTO = "im13724.jpg"       # held-out flower portrait: tagging
QUERY_TEXT = "sky, clouds, sunset"
TOP_K = 6


def random_ranking_map(labels: np.ndarray, trials: int = 5, dim: int = 64) -> dict:
    """Cross-modal mAP of random embeddings on the same test labels: what ranking by chance scores."""
    results = []
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        results.append(cross_modal_map(rng.standard_normal((len(labels), dim)),
                                       rng.standard_normal((len(labels), dim)), labels))
    return {k: float(np.mean([r[k] for r in results])) for k in ("i2t", "t2i", "avg")}


def history_curves(history: dict) -> dict:
    """Per-epoch series of the run's history.json for the report's charts."""
    epochs = history.get("epochs", [])
    selected = history.get("selected_epoch")
    curves = {}
    for key, title in (("total", "total loss"), ("cla", "L_cla loss (label classification)"),
                       ("mdi", "L_mdi loss (multi-hop distance)"), ("adv", "L_adv loss (adversarial)"),
                       ("val_avg", "validation mAP (avg of I2T, T2I)")):
        if any(key in e for e in epochs):
            curves[title] = {"values": [e.get(key) for e in epochs], "mark": selected}
    pre = [e.get("val_bce") for e in history.get("text_pretraining", [])]
    if pre:  # pretraining keeps its lowest-validation-loss epoch
        known = [(v, epoch) for epoch, v in enumerate(pre, 1) if v is not None]
        curves["text MLP pretraining: validation BCE loss"] = {"values": pre,
                                                               "mark": min(known)[1] if known else None}
    return curves


def query_stage(model, indexes: dict, ds: Dataset, queries: dict, console) -> tuple[list, dict]:
    """Image2Text, Image→Image and Text2Image examples, and the tagging of a held-out photo."""
    from .indexes import search

    from dagnn_runtime.engine import Searcher

    searcher = Searcher(model, indexes)  # the indexes stay open: the caller closes them
    query = queries[QUERY_PHOTO]
    known_tags, _ = model.parse_text(QUERY_TEXT)
    text_labels = [t for t in known_tags if t in model.labels]  # the labels the text names
    # photos in the image index carry no tags in their metadata: add them from the data set for display
    tags_of = {str(p.row): list(p.tags) for p in ds.pairs}
    examples = []
    for kind, description, q, results in (
        ("Image2Text", f"held-out photo {QUERY_PHOTO} → the closest tag texts", query,
         search(searcher, TOP_K, image=query["image"], target="text")),
        ("Image→Image", f"held-out photo {QUERY_PHOTO} → the closest photos", query,
         search(searcher, TOP_K, image=query["image"], target="image")),
        ("Text2Image", f"text {QUERY_TEXT!r} → the closest photos", {"text": QUERY_TEXT, "labels": text_labels},
         search(searcher, TOP_K, text=QUERY_TEXT, target="image")),
    ):
        for r in results:
            if r["image"] and not r["tags"]:
                r["tags"] = tags_of.get(r["id"], [])
        examples.append({"kind": kind, "description": description, "query": q, "results": results})
        console.print(render.results_table(f"{kind}: {description}", results, q["labels"]))
        console.print(f"  {render.hits_line(results, q['labels'])}"
                      + (f" (true labels of the query: {', '.join(q['labels'])})" if q.get("image") else
                         f" (labels named in the text: {', '.join(text_labels)})"))

    tagged = queries[TAG_PHOTO]
    result = searcher.tag([tagged["image"]])[0]
    tagging = {"image": tagged["image"], "tags": tagged["tags"], "true": tagged["labels"],
               "predicted": [{"label": s.label, "score": s.score, "threshold": s.threshold} for s in result.labels]}
    console.print(render.tagging_table(tagging))
    return examples, tagging


def metrics_stage(model, ds: Dataset, run_dir: Path, run_metrics: dict, console) -> tuple[dict, int]:
    """The bundle's test mAP (measured at export), the torch run's, and random ranking on the same pairs;
    returns (metrics, number of test pairs)."""
    manifest = model.manifest
    splits = json.loads((run_dir / "splits.json").read_text(encoding="utf-8"))
    test_labels = ds.label_matrix([ds.row_index[r] for r in splits["test"]])
    metrics = {"retrieval": {
        "DAGNN bundle (onnxruntime)": manifest["metrics"]["test"],
        "DAGNN run (torch)": {k: run_metrics[k] for k in ("i2t", "t2i", "avg")},
        "random ranking": random_ranking_map(test_labels)},
        "tagging": manifest["metrics"].get("test_tagging"),
        "note": f"Test split: {len(test_labels)} photo–text pairs, each query ranked against all of them; "
                "an item is relevant when it shares a label with the query. Tagging metrics on the test "
                "photos at thresholds calibrated on the validation split."}
    console.print(render.metrics_table(metrics["retrieval"], len(test_labels)))
    return metrics, len(test_labels)


def figures(out: Path, console) -> dict:
    """The per-label mAP and t-SNE figures of the run for the report ({caption: relative path}); none,
    with a note, without the [plots] extra."""
    from dagnn_runtime.errors import DagnnError

    from ..evaluate import evaluate_run

    try:
        drawn = evaluate_run(out / "run", "test", plots=out / FILES_DIR, figures=("per_label_ap", "tsne"))["plots"]
    except DagnnError as exc:
        if "[plots]" not in str(exc):
            raise
        console.print(f"report without figures: {exc}")
        return {}
    captions = {"per_label_ap": "Per-label retrieval mAP on the test split (mean AP of the queries with the label)",
                "tsne": "t-SNE of the classifiers Z (left) and of the GNN's input label vectors (right), "
                        "label co-occurrence graph drawn over them"}
    return {captions[name]: f"{FILES_DIR}/{Path(path).name}" for name, path in drawn.items()}
