"""``dagnn embed``: embed many images into resumable Parquet shards, in this process or on Ray Data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dagnn_runtime.errors import InputError, shorten

from .app import app
from .options import checked_threads, expect_digest_opt, force_threads_opt, load_model


@app.command()
def embed(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle (folder or .dagnn archive) whose image encoder to run."),
    out: Path = typer.Option(..., "--out", help="Output folder of Parquet shards; rerunning resumes it."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of photos (recursive)."),
    list_file: Optional[Path] = typer.Option(None, "--list", help="Text file: one image path per line."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data set folder (pairs.jsonl with images)."),
    engine: str = typer.Option("local", "--engine", help="local (this process) | ray (Ray Data; RAY_ADDRESS "
                                                         "joins a cluster)."),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="Items per shard (the unit of resume)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per encoder batch."),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray actors, each with one encoder session."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="Encoder threads (local: onnxruntime's choice; ray: 1 per actor)."),
    force_threads: bool = force_threads_opt,
    expect_digest: Optional[str] = expect_digest_opt,
    quiet: bool = typer.Option(False, "--quiet", help="No per-shard progress lines."),
):
    """Encode photos with the bundle's image encoder into sharded Parquet (id, path, embedding, label
    scores, error). Unreadable images become error rows; finished shards are skipped on a rerun."""
    from dagnn_runtime.embed import embed as embed_local, items_from_data, items_from_images, items_from_list

    given = [(name, v) for name, v in (("--images", images), ("--list", list_file), ("--data", data)) if v]
    if len(given) != 1:
        raise InputError("give exactly one of --images DIR, --list FILE, --data DIR")
    if engine not in ("local", "ray"):
        raise InputError(f"--engine must be local or ray, got {shorten(engine)}")
    checked_threads(threads, force_threads)
    name, source = given[0]
    items = {"--images": items_from_images, "--list": items_from_list, "--data": items_from_data}[name](source)

    def progress(index: int, rows: int, errors: int) -> None:
        if not quiet:
            typer.echo(f"shard {index}: {rows} items, {errors} errors", err=True)

    if engine == "ray":
        from dagnn_runtime.embed.ray_engine import embed_ray

        model = load_model(bundle, 1, expect_digest=expect_digest, providers="cpu")
        report = embed_ray(bundle, model, items, out, shard_size=shard_size, batch_size=batch_size,
                           workers=workers, threads=threads or 1, on_shard=progress, force_threads=force_threads)
    else:
        model = load_model(bundle, threads, force_threads, expect_digest)
        report = embed_local(model, items, out, shard_size=shard_size, batch_size=batch_size, on_shard=progress)
    rate = report.items / report.seconds if report.seconds else 0.0
    typer.echo(f"{out}: {report.shards} shards ({report.skipped_shards} already done), {report.items} items "
               f"embedded now, {report.errors} errors, {report.seconds:.1f} s ({rate:.1f} items/s)")
    for line in report.error_samples:
        typer.echo(f"  error: {line}")
