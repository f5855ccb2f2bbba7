"""``dagnn demo``: train, export, index and query the embedded MIRFlickr subset in a few minutes."""
from __future__ import annotations

from pathlib import Path

import typer

from .main import app, fail


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for everything the demo builds "
                             "(features, run, bundle, indexes, report.html)."),
    quick: bool = typer.Option(False, "--quick", help="Half the photos, same stages: a smoke run of a minute or two."),
):
    """The whole path on 1,200 embedded MIRFlickr photos: features → training → export → indexes →
    queries and tagging → test mAP → report.html. Needs the train extra (torch)."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a folder")
    try:
        import torch  # noqa: F401
        from dagnn_export.demo import DemoError, run_demo
    except ImportError as exc:
        fail(f"`dagnn demo` trains a model and needs the [train] extra (torch): {exc}")
    try:
        run_demo(out, quick=quick)
    except DemoError as exc:
        fail(str(exc))
