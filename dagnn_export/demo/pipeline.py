"""``dagnn demo``: the whole path on the embedded MIRFlickr subset, timed stage by stage.

features (pretrained EfficientNet-Lite0, cached in the output folder) → DAGNN training (mirflickr preset,
few epochs) → fp32 bundle export → indexes of the photos and the tag texts → example queries with a
held-out photo and a text, tagging of a held-out photo → test mAP against random ranking → report.html.

Every stage calls the project's own public functions (features, train, export, runtime ingest, indexes
and the Searcher); this module copies the data into the output folder, orders and times the stages,
checks the margin over random ranking and hands what came out to ``render``. Thread counts
come from ``train.pick_threads`` at each stage: on a busy machine one thread is faster than two that spin.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dagnn_runtime.atomic import atomic_write_text
from dagnn_runtime.dataset import Dataset

from ..errors import DemoError
from ..files import write_json
from . import render
from .stages import QUERY_PHOTO, figures, history_curves, metrics_stage, query_stage

DATA_DIR = Path(__file__).resolve().parent / "data" / "mirflickr-mini"
BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class Plan:
    """How much of the embedded data and how many epochs a demo run uses."""

    name: str
    photos: int | None          # photo pairs kept (None: all 1,200)
    text_only: int | None       # text-only pairs kept for text pretraining (None: all)
    train: dict = field(default_factory=dict)   # TrainConfig overrides on top of the mirflickr preset
    min_margin: float | None = 0.03  # test mAP (avg) must beat random ranking by this much (None: no check)
    backbone: str = BACKBONE


# Epochs sized so that the full run stays well under 5 minutes on 2 CPU cores (validation mAP is still
# rising at epoch 10: a longer `dagnn train` gains a few points). The quick run (CI) halves the photos and
# the epochs and still beats random ranking clearly.
FULL = Plan("full", None, None, train={"epochs": 10, "text_pretrain_epochs": 8})
QUICK = Plan("quick", 600, 1000, train={"epochs": 5, "text_pretrain_epochs": 4})


# -------------------------------------------------------------------------------------------------- data
def prepare_subset(src: Path, dst: Path, photos: int | None, text_only: int | None, seed: int = 0) -> Path:
    """A data set folder of ``photos`` photo pairs and ``text_only`` text pairs drawn (seeded) from ``src``
    (None: all of them), same labels, vocabulary and label vectors. Photos are copied so that the folder
    stands alone: the demo's indexes point into it, and its output folder can be moved as a whole."""
    ds = Dataset.load(src)
    rng = np.random.default_rng(seed)
    with_image = [p for p in ds.pairs if p.image is not None]
    without = [p for p in ds.pairs if p.image is None]
    keep = [with_image[i] for i in sorted(rng.permutation(len(with_image))[:photos])]
    keep += [without[i] for i in sorted(rng.permutation(len(without))[:text_only])]
    keep.sort(key=lambda p: p.row)
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("labels.txt", "tag_vocab.txt", "label_embeddings.npy"):
        shutil.copyfile(src / name, dst / name)
    for pair in keep:
        if pair.image is not None:
            target = dst / pair.image
            if not target.is_file() or target.stat().st_size != (src / pair.image).stat().st_size:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / pair.image, target)
    lines = [json.dumps({"row": p.row, "image": p.image, "tags": list(p.tags), "labels": list(p.labels)})
             for p in keep]
    atomic_write_text(dst / "pairs.jsonl", "\n".join(lines) + "\n")
    return dst


def held_out_queries(data_dir: Path = DATA_DIR) -> dict:
    """The held-out photos of ``queries/`` (not in pairs.jsonl) with their true tags and labels, by file name."""
    path = data_dir / "queries" / "queries.jsonl"
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["image"]] = {"image": data_dir / "queries" / rec["image"], "tags": rec["tags"],
                                 "labels": rec["labels"]}
    return out


def _check_margin(plan: Plan, served: dict, chance: dict) -> None:
    margin = served["avg"] - chance["avg"]
    if plan.min_margin is not None and not (served["i2t"] > chance["i2t"] and served["t2i"] > chance["t2i"]
                                            and margin >= plan.min_margin):
        raise DemoError(f"the trained model does not beat random ranking on the test split: mAP I2T "
                        f"{served['i2t']:.4f} / T2I {served['t2i']:.4f} / avg {served['avg']:.4f} vs random "
                        f"{chance['i2t']:.4f} / {chance['t2i']:.4f} / {chance['avg']:.4f} "
                        f"(needs avg +{plan.min_margin})")


def run_demo(out_dir, quick: bool = False, console=None, plan: Plan | None = None) -> dict:
    """Run every stage into ``out_dir`` (``plan`` defaults to FULL, or QUICK with ``quick``); returns a
    summary (also in demo.json) and writes report.html. Raises ``DemoError`` when the trained model does
    not beat random ranking on the test split."""
    import torch
    from rich.console import Console

    import dagnn_runtime as dr

    from ..config import make_config
    from ..export import export_run
    from ..features import extract_features
    from ..train import pick_threads, train_run
    from .indexes import build_indexes
    from .report import write_report

    console = console or Console(highlight=False)
    plan = plan or (QUICK if quick else FULL)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    stages = render.Stages(console, total=8)
    started = time.perf_counter()
    queries = held_out_queries()
    # Copies of the held-out photos beside the results, so the commands printed at the end stay short.
    (out / "queries").mkdir(exist_ok=True)
    for q in queries.values():
        shutil.copyfile(q["image"], out / "queries" / q["image"].name)
        q["image"] = out / "queries" / q["image"].name

    with stages.stage("data", "the embedded MIRFlickr subset") as st:
        data = prepare_subset(DATA_DIR, out / "data", plan.photos, plan.text_only)
        ds = Dataset.load(data)
        n_photos = len(ds.with_images())
        st["detail"] = (f"{n_photos} photo pairs + {len(ds) - n_photos} text-only pairs, "
                        f"{len(ds.labels)} labels, {len(ds.vocab)} tags ({plan.name} run)")

    with stages.stage("features", f"pretrained {plan.backbone} features, cached in {out.name}/") as st:
        features = extract_features(data, plan.backbone, out / f"features-{plan.backbone}.npz", progress=True,
                                    threads=pick_threads(), log=console.print)
        st["detail"] = f"{n_photos} photos → {features.name}"

    with stages.stage("training", "DAGNN, mirflickr preset") as st:
        cfg = make_config("mirflickr", data=str(data), features=str(features),
                          label_embeddings=str(data / "label_embeddings.npy"), **plan.train)
        run_metrics = train_run(cfg, out / "run", progress=True, log=console.print)
        history = json.loads((out / "run" / "history.json").read_text(encoding="utf-8"))
        st["detail"] = (f"{run_metrics['epochs_run']} epochs, best validation epoch {run_metrics['selected_epoch']}, "
                        f"test mAP {run_metrics['avg']:.4f}")

    with stages.stage("export", "fp32 ONNX bundle, checked against torch") as st:
        torch.set_num_threads(pick_threads())
        bundle = export_run(out / "run", out / "bundle", force=True, log=console.print, threads=pick_threads())
        st["detail"] = f"{bundle.name}/ ({sum(f.stat().st_size for f in bundle.iterdir()) / 1e6:.1f} MB)"

    index_dir = out / "index"
    with stages.stage("indexes", "indexes of the photos and the tag texts (dagnn_runtime)") as st:
        model = dr.load(bundle, threads=pick_threads())
        indexes = build_indexes(model, data, index_dir, log=console.print)
        st["detail"] = (f"{len(indexes['image'])} photos, {len(indexes['text'])} tag texts → "
                        f"{index_dir.name}/image, /text")

    try:
        with stages.stage("queries", "held-out photo and text queries, tagging") as st:
            examples, tagging = query_stage(model, indexes, ds, queries, console)
            st["detail"] = f"{len(examples)} retrieval examples, 1 tagged photo"
    finally:
        for index in indexes.values():
            index.close()

    with stages.stage("metrics", "test mAP of the bundle against random ranking") as st:
        metrics, n_test = metrics_stage(model, ds, out / "run", run_metrics, console)
        served, chance = metrics["retrieval"]["DAGNN bundle (onnxruntime)"], metrics["retrieval"]["random ranking"]
        st["detail"] = f"test mAP {served['avg']:.4f}, random ranking {chance['avg']:.4f}"

    dagnn, sh = render.dagnn_command(), render.shell_path
    q_cmd = (f"{dagnn} query --bundle {sh(bundle)} --index {sh(index_dir)} "
             f"--image {sh(queries[QUERY_PHOTO]['image'])} --k 5")
    t_cmd = f"{dagnn} query --bundle {sh(bundle)} --index {sh(index_dir)} --text 'flower, macro'"
    tag_cmd = f"{dagnn} tag --bundle {sh(bundle)} --image {sh(tagging['image'])}"
    with stages.stage("report", "report.html with thumbnails, curves, metrics and timings") as st:
        results = {
            "title": f"dagnn demo — MIRFlickr subset ({plan.name} run)",
            "subtitle": (f"{n_photos} photo pairs ({n_test} held out for test), {plan.backbone} features, "
                         f"DAGNN trained {run_metrics['epochs_run']} epochs, fp32 bundle served by onnxruntime "
                         f"with HNSW indexes."),
            "metrics": metrics, "queries": examples, "tagging": tagging, "curves": history_curves(history),
            "curves_note": f"Per epoch. Dots mark the epoch kept: {history.get('selected_epoch')} for DAGNN "
                           "(best validation mAP), the lowest validation loss for text MLP pretraining.",
            "stages": list(stages.done),
            "next_command": f"# from the folder `dagnn demo` ran in\n{q_cmd}\n{t_cmd}\n{tag_cmd}",
        }
        t_figures = time.perf_counter()
        results["figures"] = figures(out, console)
        t_figures = time.perf_counter() - t_figures
        report = write_report(results, out)
        st["detail"] = (f"{report.name} + {len(list((out / 'report_files').glob('*.jpg')))} thumbnails, "
                        f"{len(results['figures'])} figures ({t_figures:.1f} s)")

    total = time.perf_counter() - started
    summary = {"plan": plan.name, "seconds": round(total, 1), "cpu_seconds": round(time.process_time(), 1),
               "stages": {s["name"]: round(s["seconds"], 1) for s in stages.done},
               "test_map": served, "test_map_torch": metrics["retrieval"]["DAGNN run (torch)"],
               "random_map": chance, "bundle": str(bundle), "index": str(index_dir), "report": str(report),
               "query_command": q_cmd}
    write_json(out / "demo.json", summary)

    console.print(render.timing_table(stages.done, total))
    _check_margin(plan, served, chance)
    console.print(f"[green]✓[/green] test mAP {served['avg']:.4f} beats random ranking {chance['avg']:.4f} "
                  f"by {served['avg'] - chance['avg']:.4f}")
    console.print(f"Report: {sh(report)}  (open it in a browser; the folder can be moved)")
    console.print("Next, query what the demo built:")
    for cmd in (q_cmd, t_cmd, tag_cmd):
        console.print(f"  {cmd}", markup=False, soft_wrap=True)
    return summary
