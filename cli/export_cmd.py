"""``dagnn export``: a training run → a verified bundle (folder or ``.dagnn`` archive)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dagnn_runtime.errors import InputError, shorten

from .app import app, needs_train_extra


@app.command("export")
def export(
    run: Path = typer.Option(..., "--run", help="Training run folder (written by `dagnn train --out`)."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write; a name ending in .dagnn writes "
                                                "only the zip archive."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset of the graphs."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="'int8': static, calibrated QDQ "
                                                                    "quantisation of the image encoder."),
    calibration_data: Optional[Path] = typer.Option(
        None, "--calibration-data", help="int8 calibration images: a data set folder or a folder of images "
                                         "(default: the run's training split)."),
    calibration_size: int = typer.Option(256, "--calibration-size", help="Number of calibration images."),
    calibration_method: str = typer.Option("minmax", "--calibration-method",
                                           help="int8 range calibration: minmax, percentile or entropy."),
    min_int8_cosine: float = typer.Option(0.99, "--min-int8-cosine",
                                          help="Refuse an int8 image graph whose embeddings of the validation "
                                               "photos have a lower mean cosine to fp32 (after trying every "
                                               "int8 configuration)."),
    mirror: bool = typer.Option(False, "--mirror",
                                help="Embed each photo as the mean of its and its left-right mirror image's "
                                     "embeddings (test-time augmentation): twice the image encoder's work per "
                                     "photo. Thresholds and test metrics are measured with it."),
    archive: bool = typer.Option(False, "--archive", help="Also write OUT.dagnn, one zip of the bundle."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data set folder, if it moved since training."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at OUT."),
    parity_samples: int = typer.Option(256, "--parity-samples",
                                       help="Validation pairs compared between onnxruntime and torch."),
    threads: int = typer.Option(2, "--threads", help="CPU threads for torch and onnxruntime."),
):
    """Export a trained run to ONNX graphs + manifest + model card, checked against torch before it is
    written (parity, onnx.checker, re-opened with the runtime loader)."""
    if quantize not in (None, "int8"):
        raise InputError(f"--quantize {shorten(quantize)} is not supported; use --quantize int8 or leave it out")
    if calibration_data is not None and quantize is None:
        raise InputError("--calibration-data only applies with --quantize int8")
    if not 0 < min_int8_cosine <= 1:
        raise InputError(f"--min-int8-cosine must be in (0, 1], not {min_int8_cosine}")
    if not run.is_dir():
        raise InputError(f"run folder {run} does not exist")
    needs_train_extra("export")
    import torch

    from dagnn_export.export import export_run

    torch.set_num_threads(max(1, threads))
    written = export_run(run, out, data=data, opset=opset, quantize=quantize, calibration_data=calibration_data,
                         calibration_size=calibration_size, calibration_method=calibration_method,
                         archive=archive, force=force, parity_samples=parity_samples, threads=threads,
                         min_int8_cosine=min_int8_cosine, mirror=mirror,
                         log=lambda msg: typer.echo(msg, err=True))
    typer.echo(str(written))
