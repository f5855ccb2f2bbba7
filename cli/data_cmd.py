"""``dagnn data import``: .mat files of the literature (GNN4CMR, DCMH layouts) → a dagnn data set folder."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dagnn_runtime.errors import DagnnError, InputError, install_hint, shorten

from .app import data_app


@data_app.command("import")
def import_(
    src: Path = typer.Argument(..., help="GNN4CMR folder ({train,test}_{img,txt,lab}.mat), or a DCMH .mat file "
                                         "or folder of .mat files (IAll/XAll, YAll, LAll)."),
    fmt: str = typer.Option(..., "--format", help="gnn4cmr | dcmh."),
    out: Path = typer.Option(..., "--out", help="Data set folder to write (with features.npz when the files "
                                                "hold image features)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label names, one per line in column order "
                                                                 "(default label_00 …)."),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help="Tag names, one per line in column order "
                                                               "(default tag_0000 …)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder at OUT."),
):
    """Convert paper-format .mat files into a data set folder that `dagnn train` reads."""
    if fmt not in ("gnn4cmr", "dcmh"):
        raise InputError(f"--format {shorten(fmt)}: choose gnn4cmr or dcmh")
    if not src.exists():
        raise InputError(f"{src} does not exist")
    for option, path in (("--labels", labels), ("--vocab", vocab)):
        if path is not None and not path.is_file():
            raise InputError(f"{option} file {path} does not exist")
    try:
        import scipy.io  # noqa: F401
    except ImportError as exc:
        raise DagnnError(f"`dagnn data import` reads .mat files with scipy, from the [train] extra ({exc}): "
                         f"{install_hint('train')}") from exc
    from dagnn_export.mat_import import import_mat

    done = import_mat(fmt, src, out, labels=labels, vocab=vocab, force=force)
    typer.echo(f"{done['out']}: {done['pairs']} pairs, {done['labels']} labels, {done['tags']} tags"
               + (f", {done['photos']} photos" if done["photos"] else "")
               + (f", test split of {done['test_rows']} pairs" if done["test_rows"] else ""))
    if done["features"]:
        typer.echo(f"next: dagnn train --data {out} --features {done['features']} --out RUN "
                   "(features only: the run trains and evaluates, but has no backbone to export)")
    else:
        typer.echo(f"next: dagnn train --data {out} --out RUN (extracts image features first)")
