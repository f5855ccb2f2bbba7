"""``dagnn train``: train DAGNN on cached image features and write a run directory."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dagnn_runtime.errors import InputError

from .app import app, needs_train_extra


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Data set folder (pairs.jsonl, labels.txt, tag_vocab.txt)."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    features: Optional[Path] = typer.Option(None, "--features",
                                            help="Feature cache (.npz from `dagnn features`); "
                                                 "without it, features are extracted into the run directory."),
    preset: str = typer.Option("mirflickr", "--preset", help="Hyper-parameter preset: mirflickr | mirflickr-finetune | nuswide."),
    variant: str = typer.Option("dagnn", "--variant", help="dagnn | dagnn-1 … dagnn-5 (paper's ablations)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum training epochs."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Stop after this many epochs without "
                                                                     "a better validation mAP."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (torch and numpy)."),
    label_embeddings: Optional[Path] = typer.Option(None, "--label-embeddings",
                                                    help="Label word vectors .npy (one row per label)."),
    gnn: Optional[str] = typer.Option(None, "--gnn", help="gat | gcn."),
    gnn_layers: Optional[int] = typer.Option(None, "--gnn-layers", help="Number of GNN layers."),
    layer_aggregation: Optional[bool] = typer.Option(None, "--layer-aggregation/--no-layer-aggregation",
                                                     help="Aggregate all GNN layers (Eq. 4) or use the last."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Weight of L_mdi."),
    beta: Optional[float] = typer.Option(None, "--beta", help="Weight of L_adv."),
    tau: Optional[float] = typer.Option(None, "--tau", help="Graph threshold (default 0.3 GAT, 0.4 GCN)."),
    p: Optional[float] = typer.Option(None, "--p", help="Neighbour weight of the re-weighted graph (GCN)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Backbone for on-the-fly feature extraction "
                                           "(names and input sides: `dagnn features --help`; a+b fuses several)."),
    backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights", help="Local backbone weights."),
    finetune_backbone: Optional[int] = typer.Option(None, "--finetune-backbone", min=0,
                                                    help="Train the backbone's last K blocks with DAGNN, on trunk "
                                                         "maps cached by `dagnn features --trunk-blocks N` "
                                                         "(N >= K) and given as --features."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from this run's weights (a run "
                                                                         "on frozen features), e.g. to fine-tune."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Any config field: --set dropout=0.2 "
                                                                      "(repeatable)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
):
    """Train DAGNN; keeps the best-validation epoch and reports its test mAP."""
    needs_train_extra("train")
    from dagnn_export.config import default_values, make_config, parse_override
    from dagnn_export.train import train_run

    if not data.is_dir():
        raise InputError(f"data set folder {data} does not exist")
    if features is not None and not features.is_file():
        raise InputError(f"feature cache {features} does not exist")
    if init_from is not None and not init_from.exists():
        raise InputError(f"run {init_from} does not exist")
    if label_embeddings is not None and not label_embeddings.is_file():
        raise InputError(f"label embeddings file {label_embeddings} does not exist")
    fields = default_values()
    given = dict(data=str(data), features=str(features) if features else None, epochs=epochs, patience=patience,
                 seed=seed, label_embeddings=str(label_embeddings) if label_embeddings else None, gnn=gnn,
                 gnn_layers=gnn_layers, layer_aggregation=layer_aggregation, lr=lr, batch_size=batch_size,
                 alpha=alpha, beta=beta, tau=tau, p=p, backbone=backbone,
                 backbone_weights=str(backbone_weights) if backbone_weights else None,
                 finetune_backbone=finetune_backbone, init_from=str(init_from) if init_from else None)
    given.update(parse_override(fields, item) for item in overrides or [])
    cfg = make_config(preset, variant, **given)
    metrics = train_run(cfg, out, progress=progress, log=typer.echo)
    typer.echo(f"selected epoch {metrics['selected_epoch']} of {metrics['epochs_run']} (best validation mAP "
               f"{metrics['val']['avg']:.4f})")
    typer.echo(f"test mAP: I2T {metrics['i2t']:.4f}  T2I {metrics['t2i']:.4f}  avg {metrics['avg']:.4f}  "
               f"({metrics['train_seconds']:.0f}s) -> {out}")
