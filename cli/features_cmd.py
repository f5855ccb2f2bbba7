"""``dagnn features``: compute (or update) the backbone feature cache of a data set folder."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dagnn_export.backbone_names import BACKBONES, LITE_SIDES

from .app import app, needs_train_extra

BACKBONE_HELP = (" | ".join(BACKBONES) + ", or several joined by '+' (fused: features side by side, the input at "
                 "the largest member's side). Input sides: " + ", ".join(f"{n} {s} px" for n, s in LITE_SIDES.items())
                 + "; efficientnet_lite0_mid is Lite0's first 11 of 16 blocks (weaker, cheaper features); tiny is "
                 "for tests.")


@app.command()
def features(
    data: Path = typer.Option(..., "--data", help="Data set folder (pairs.jsonl, labels.txt, tag_vocab.txt)."),
    backbone: str = typer.Option("efficientnet_lite0", "--backbone", help=BACKBONE_HELP),
    out: Path = typer.Option(..., "--out", help="Feature cache to write (.npz); rows already in it are reused."),
    backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights",
                                                    help="Local state_dict file for the backbone (needed for "
                                                         "vgg19 when torchvision cannot download; not with a "
                                                         "fused backbone)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per inference batch."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="Inference threads (default: onnxruntime's choice)."),
    trunk_blocks: int = typer.Option(0, "--trunk-blocks", min=0,
                                     help="Cache the trunk's activation maps before the backbone's last N blocks "
                                          "instead of pooled features (for `dagnn train --finetune-backbone K`, "
                                          "K <= N)."),
    flip: bool = typer.Option(False, "--flip", help="Also cache each photo mirrored left-right (augmentation)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1,
                                             help="Input side in pixels (default: the backbone's own)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
):
    """Run the image backbone over every pair with an image and cache the features for training."""
    needs_train_extra("features")
    from dagnn_export.features import extract_features

    extract_features(data, backbone, out, weights=backbone_weights, batch_size=batch_size, progress=not quiet,
                     threads=threads, log=lambda message: typer.echo(message, err=True), trunk_blocks=trunk_blocks,
                     flip=flip, image_size=image_size)
