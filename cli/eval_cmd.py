"""``dagnn eval``: a bundle's metrics re-measured with the runtime alone, or a training run's (torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dagnn_runtime.constants import SPLITS
from dagnn_runtime.errors import DagnnError, InputError, install_hint, shorten

from . import render
from .app import app, needs_train_extra
from .options import expect_digest_opt, force_threads_opt, load_model, threads_opt


@app.command("eval")
def eval_cmd(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Evaluate this bundle with the runtime alone."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data set folder (with --bundle)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Evaluate a training run (needs the \\[train] extra)."),
    split: str = typer.Option("test", "--split", help="train | val | test."),
    k: Optional[int] = typer.Option(None, "--k", min=1, help="Also report mAP@k."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    threads: Optional[int] = threads_opt,
    force_threads: bool = force_threads_opt,
    expect_digest: Optional[str] = expect_digest_opt,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Also write the evaluation figures (PNG) "
                                         "into this folder, the training curves with --run (needs the "
                                         "\\[plots] extra)."),
):
    """Cross-modal mAP (I2T, T2I, average) and tagging metrics, from a bundle or a training run."""
    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, not {shorten(split)}")
    if plots is not None and plots.exists() and not plots.is_dir():
        raise InputError(f"--plots {shorten(str(plots), path=True)} is a file, not a folder")
    if plots is not None:
        needs_plots_extra()
    if run is not None:
        if bundle is not None or data is not None or expect_digest is not None:
            raise InputError("give either --run RUN or --bundle B --data DIR (--expect-digest), not both")
        needs_train_extra("eval --run")
        from dagnn_export.evaluate import evaluate_run

        result = evaluate_run(run, split, k, plots=plots)
        claimed = {}
    else:
        if bundle is None or data is None:
            raise InputError("give --bundle B --data DIR (or --run RUN)")
        import dagnn_runtime as dr
        from dagnn_runtime.evaluation import claimed_metrics

        model = load_model(bundle, threads, force_threads, expect_digest)
        with render.progress(f"encoding {split} images", None, quiet) as on_progress:
            result = dr.evaluate_bundle(model, data, split, k, batch_size, on_progress=on_progress, plots=plots)
        claimed = claimed_metrics(model, split)
    title = f"{run or bundle}: {result.get('split', split)} split, {result.get('n', '?')} pairs"
    render.eval_result(result, claimed, title, as_json)


def needs_plots_extra() -> None:
    """Refuse ``--plots`` before evaluating, not after, when the [plots] extra is missing (looked up without
    importing matplotlib or scikit-learn, which only ``dagnn_runtime.plots`` imports)."""
    from importlib.util import find_spec

    missing = [name for name, module in (("matplotlib", "matplotlib"), ("scikit-learn", "sklearn"))
               if find_spec(module) is None]
    if missing:
        raise DagnnError(f"--plots needs the [plots] extra ({' and '.join(missing)} not installed): "
                         f"{install_hint('plots')}")
