"""Training DAGNN on cached image features, with model selection on the validation split only.

Steps: split (test from the data set's split file, validation carved from training) → label graph from the
training labels → text MLP pretrained by label classification on all training text (image pairs of the
training split plus the text-only pairs) → joint training of the whole objective, validation mAP after each
epoch, the best-validation epoch kept (early stopping with patience) → test mAP of that epoch → run dir.
"""
from __future__ import annotations

import copy
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from dagnn_runtime.atomic import atomic_write

from .config import TrainConfig
from .errors import FeatureError, RunError  # noqa: F401 - RunError stays importable from here
from .evaluate import retrieval_scores, split_metrics
from .files import write_json, write_lines
from .graph import correlation_matrices, propagation_matrix
from .losses import classification_loss, dagnn_loss
from .model import DAGNN, build_model
from .progress import Progress
from .run import TrainingData, load_initial_weights, load_text_mlp, load_training_data

logger = logging.getLogger(__name__)


def save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def pick_threads(requested: int = 0) -> int:
    """Threads for torch: ``requested`` if > 0, else at most 2, fewer when other processes keep the cores
    busy (oversubscribed OpenMP threads spin and can make training several times slower)."""
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        idle = cores - os.getloadavg()[0]
    except OSError:
        idle = cores
    return int(max(1, min(2, cores, round(idle))))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- text MLP pretraining ----------------------------------------------------------------------------------
def pretrain_text_mlp(model: DAGNN, bow: torch.Tensor, y: torch.Tensor, val_bow: torch.Tensor,
                      val_y: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> list[dict]:
    """The paper's "general classification task": multi-label BCE on the labels, early-stopped on the
    validation loss; the best epoch's weights are kept. Returns the per-epoch history."""
    mlp = model.text_mlp
    opt = torch.optim.Adam(mlp.parameters(), lr=cfg.text_pretrain_lr, fused=True)
    best, best_loss, bad, history = None, float("inf"), 0, []
    for epoch in range(1, cfg.text_pretrain_epochs + 1):
        mlp.train()
        order = torch.randperm(len(bow), generator=generator)
        total = 0.0
        for start in range(0, len(order), cfg.text_pretrain_batch):
            idx = order[start:start + cfg.text_pretrain_batch]
            loss = F.binary_cross_entropy_with_logits(mlp.logits(bow[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        mlp.eval()
        with torch.no_grad():
            val_loss = F.binary_cross_entropy_with_logits(mlp.logits(val_bow), val_y).item()
        history.append({"epoch": epoch, "train_bce": total / len(bow), "val_bce": val_loss})
        if val_loss < best_loss - 1e-5:
            best, best_loss, bad = copy.deepcopy(mlp.state_dict()), val_loss, 0
        else:
            bad += 1
            if bad >= cfg.text_pretrain_patience:
                break
    if best is not None:
        mlp.load_state_dict(best)
    mlp.eval()
    return history


# -- training ----------------------------------------------------------------------------------------------
def fit(cfg: TrainConfig, data: TrainingData, progress: bool = True, log=None) -> dict:
    """Train a model on prepared data; returns model (best-validation epoch), graph, histories, metrics."""
    log = log or logger.info
    torch.set_num_threads(pick_threads(cfg.num_threads))
    seed_everything(cfg.seed)
    tau = cfg.resolved_tau()
    graph = correlation_matrices(data.train.y.numpy(), tau, cfg.p)
    model = build_model(cfg, data.train.h_v.shape[1], data.train.bow.shape[1], data.label_embeddings,
                        propagation_matrix(graph, cfg.gnn, cfg.graph_direction))
    if model.image_head is not None:
        from .backbone_split import build_head

        model.image_head.load_state_dict(build_head(cfg, pretrained=True).state_dict())
    if cfg.init_from:
        load_initial_weights(model, cfg.init_from)

    # 1) text MLP pretraining on all training text (never validation/test text).
    pre_bow = torch.cat([data.train.bow, data.text_only.bow])
    pre_y = torch.cat([data.train.y, data.text_only.y])
    t0 = time.time()
    text_history = []
    if cfg.init_from:
        pass  # the text MLP came with the initial weights
    elif cfg.text_mlp_init:
        load_text_mlp(model, cfg.text_mlp_init)
    elif cfg.text_pretrain_epochs > 0:
        text_history = pretrain_text_mlp(model, pre_bow, pre_y, data.val.bow, data.val.y, cfg,
                                         torch.Generator().manual_seed(cfg.seed))
    if text_history:
        log(f"text MLP pretrained: {len(text_history)} epochs, best val BCE "
            f"{min((h['val_bce'] for h in text_history), default=float('nan')):.4f} ({time.time() - t0:.0f}s)")
    if cfg.freeze_text_mlp:
        model.text_mlp.requires_grad_(False)
    # A fresh model is in train mode: without pretraining, h_t and its statistics would be taken with the
    # MLP's dropout on, while evaluation recomputes them with it off.
    model.text_mlp.eval()
    with torch.no_grad():
        h_t_train = model.text_features(data.train.bow)
        if not cfg.init_from:  # a started run brings the statistics it was trained with
            h_v_train = torch.cat([model.image_features(x) for x in data.train.h_v.split(1024)])
            model.set_input_statistics(h_v_train, h_t_train, cfg.standardize_inputs)
    # A frozen text MLP gives the same h_t every epoch: compute it once.
    cached_h_t = {}
    if cfg.freeze_text_mlp:
        with torch.no_grad():
            cached_h_t = {"train": h_t_train, "val": model.text_features(data.val.bow),
                          "text_only": model.text_features(data.text_only.bow)}
    use_text_only = cfg.text_only_in_training and len(data.text_only.bow) > 1

    # 2) joint training; its random state does not depend on whether pretraining ran or was reused.
    torch.manual_seed(cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    head = [p for p in model.image_head.parameters() if p.requires_grad] if model.image_head is not None else []
    rest = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("image_head.")]
    groups = [{"params": rest}] + ([{"params": head, "lr": cfg.backbone_lr}] if head else [])
    # fused: one kernel over all parameters, several times faster than the per-tensor loop on CPU.
    opt = torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.adam_beta1, 0.999), weight_decay=cfg.weight_decay,
                           fused=True)
    n = len(data.train.bow)
    flipped = data.train.h_v_flipped if cfg.flip else None
    best = {"val_avg": -1.0, "epoch": 0, "state": None, "val": None}
    if cfg.init_from:  # the starting point competes too: fine-tuning is kept only if validation improves
        val = retrieval_scores(model, data.val, cached_h_t.get("val"))
        best = {"val_avg": val["avg"], "epoch": 0, "state": copy.deepcopy(model.state_dict()),
                "val": {f"val_{k}": v for k, v in val.items()}}
        log(f"starting point {cfg.init_from}: val mAP {val['avg']:.4f}")
    history, bad = [], 0
    with Progress(cfg.epochs, "epoch", progress, transient=False, log=log) as bar:
        for epoch in range(1, cfg.epochs + 1):
            t_epoch = time.time()
            model.train()
            order = torch.randperm(n, generator=gen)
            if use_text_only:  # one batch of text-only pairs per step, cycling through them
                extra_order = torch.randperm(len(data.text_only.bow), generator=gen).repeat(
                    -(-n // len(data.text_only.bow)) + 1)
            sums, count = {}, 0
            for start in range(0, n, cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                if len(idx) < 2:
                    continue
                h_t = cached_h_t["train"][idx] if cached_h_t else None
                x_v = data.train.h_v[idx]
                if flipped is not None:  # each photo seen mirrored half of the time
                    x_v = torch.where(torch.rand(len(idx), 1, generator=gen) < 0.5, flipped[idx], x_v)
                out = model(x_v, data.train.bow[idx], h_t=h_t)
                terms = dagnn_loss(out, data.train.y[idx], cfg)
                if use_text_only and cfg.use_cla:
                    # Text without an image still teaches the text branch and the classifiers (L_cla, text half).
                    jdx = extra_order[start:start + cfg.batch_size]
                    t_x = model.text_common(data.text_only.bow[jdx],
                                            cached_h_t["text_only"][jdx] if cached_h_t else None)
                    terms["cla_text_only"] = classification_loss(model.scores(t_x, out["z"]), data.text_only.y[jdx])
                    terms["total"] = terms["total"] + terms["cla_text_only"]
                opt.zero_grad()
                terms["total"].backward()
                opt.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v.item() * len(idx)
                count += len(idx)
            row = {"epoch": epoch, **{k: v / count for k, v in sums.items()}}
            val = retrieval_scores(model, data.val, cached_h_t.get("val"))
            row.update({f"val_{k}": v for k, v in val.items()}, seconds=time.time() - t_epoch)
            history.append(row)
            if val["avg"] > best["val_avg"]:
                best = {"val_avg": val["avg"], "epoch": epoch, "state": copy.deepcopy(model.state_dict()), "val": row}
                bad = 0
            else:
                bad += 1
            info = " ".join(f"{k} {row[k]:.2f}" for k in ("cla", "mdi", "adv") if k in row)
            info += f" | val mAP {val['avg']:.3f} best {best['val_avg']:.3f}@{best['epoch']}"
            bar.advance(1, info=info)
            if not progress:
                log(f"epoch {epoch}: total {row['total']:.3f} {info}")
            if bad >= cfg.patience:
                break
    model.load_state_dict(best["state"])
    model.eval()
    return {"model": model, "graph": graph, "tau": tau, "history": history, "text_history": text_history,
            "best_epoch": best["epoch"], "val": best["val"]}


def _resolve_features(cfg: TrainConfig, out_dir: Path, progress: bool) -> None:
    """Without a feature cache, extract one with the configured backbone into the run directory: pooled
    features, or for fine-tuning the trunk maps before its last ``finetune_backbone`` blocks (with mirrors)."""
    if cfg.features is not None:
        if not Path(cfg.features).is_file():
            raise FeatureError(f"feature cache {cfg.features} does not exist")
        return
    from .features import extract_features

    backbone = cfg.backbone or "efficientnet_lite0"
    depth = cfg.finetune_backbone
    path = out_dir / (f"trunk-{backbone}-{depth}.npz" if depth else f"features-{backbone}.npz")
    extract_features(cfg.data, backbone, path, weights=cfg.backbone_weights, progress=progress, trunk_blocks=depth,
                     flip=depth > 0 and cfg.flip)
    cfg.features = str(path)


def _frozen_phase(cfg: TrainConfig, out_dir: Path, progress: bool, log) -> Path:
    """Phase 1 of a one-command fine-tuning run: the usual training on the features the pretrained head gives
    (``RUN/frozen-phase``, itself a complete run); phase 2 starts from it and trains the last blocks too."""
    from .features import pool_trunk_cache

    start = out_dir / "frozen-phase"
    start.mkdir(exist_ok=True)
    pooled = start / "features-pooled.npz"
    pool_trunk_cache(cfg.features, cfg.to_dict(), pooled)
    phase = TrainConfig.from_dict({**cfg.to_dict(), "features": str(pooled), "finetune_backbone": 0,
                                   "trunk_blocks": 0, "feature_dim": None})
    train_run(phase, start, progress=progress, log=log)
    return start


def train_run(cfg: TrainConfig, out_dir, progress: bool = True, log=None) -> dict:
    """Train and write the run directory (config, best-validation weights, metrics, history, splits,
    label graph, labels, vocabulary). Returns the metrics dict."""
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.data = str(Path(cfg.data).resolve()) if cfg.data else cfg.data
    _resolve_features(cfg, out_dir, progress)
    cfg.features = str(Path(cfg.features).resolve())
    if cfg.label_embeddings:
        cfg.label_embeddings = str(Path(cfg.label_embeddings).resolve())
    cfg.validate()
    data = load_training_data(cfg)
    cfg.backbone = data.backbone or cfg.backbone
    cfg.image_size = int(data.image_size) if data.image_size is not None else cfg.image_size
    cfg.feature_dim = int(data.train.h_v.shape[1])
    cfg.trunk_blocks = int(data.trunk_blocks)
    if cfg.finetune_backbone > cfg.trunk_blocks:
        raise FeatureError(f"--finetune-backbone {cfg.finetune_backbone} needs trunk maps of at least that many "
                           f"blocks (`dagnn features --trunk-blocks {cfg.finetune_backbone}`); {cfg.features} holds "
                           + (f"maps before the last {cfg.trunk_blocks}" if cfg.trunk_blocks else "pooled features"))
    cfg.vocab_size = len(data.dataset.vocab)
    cfg.num_labels = len(data.dataset.labels)
    if cfg.tau is None:
        cfg.tau = cfg.resolved_tau()
    if cfg.finetune_backbone and not cfg.init_from:
        cfg.init_from = str(_frozen_phase(cfg, out_dir, progress, log))
        cfg.epochs = cfg.patience = cfg.finetune_epochs
    write_json(out_dir / "config.json", cfg.to_dict())

    result = fit(cfg, data, progress=progress, log=log)
    model = result["model"]
    train_seconds = time.time() - started
    metrics = split_metrics(model, data, "test")
    metrics.update({"selected_epoch": result["best_epoch"], "epochs_run": len(result["history"]),
                    "val": {k: result["val"][f"val_{k}"] for k in ("i2t", "t2i", "avg")},
                    "train_seconds": round(train_seconds, 1), "variant": cfg.variant, "seed": cfg.seed})

    save_state(out_dir / "model.pt", model.state_dict())
    graph = result["graph"]
    write_json(out_dir / "label_graph.json", {"tau": result["tau"], "p": cfg.p, "labels": data.dataset.labels,
                                              **{k: graph[k].tolist() for k in ("P", "B", "A")}})
    write_json(out_dir / "splits.json", data.splits.to_json(data.dataset))
    write_lines(out_dir / "labels.txt", data.dataset.labels)
    write_lines(out_dir / "vocab.txt", data.dataset.vocab)
    write_json(out_dir / "history.json", {"text_pretraining": result["text_history"], "epochs": result["history"],
                                          "selected_epoch": result["best_epoch"]})
    write_json(out_dir / "metrics.json", metrics)
    return metrics
