"""``dagnn demo``: train, export, index and query the embedded MIRFlickr subset in a few minutes."""
from __future__ import annotations

from pathlib import Path

import typer

from dagnn_runtime.errors import InputError

from .app import app, needs_train_extra


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for everything the demo builds "
                             "(features, run, bundle, indexes, report.html)."),
    quick: bool = typer.Option(False, "--quick", help="Half the photos, same stages: a smoke run of a minute or two."),
):
    """The whole path on 1,200 embedded MIRFlickr photos: features → training → export → indexes →
    queries and tagging → test mAP → report.html. Needs the train extra (torch)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    needs_train_extra("demo")
    from dagnn_export.demo import run_demo

    run_demo(out, quick=quick)
