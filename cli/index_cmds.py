"""``dagnn index build|add|remove|info``: fill and maintain indexes with the runtime's ``ingest``."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from dagnn_runtime.constants import MODALITIES
from dagnn_runtime.errors import InputError, shorten

from . import render
from .app import index_app
from .options import (bundle_opt, expect_digest_opt, force_threads_opt, index_opt, open_index_set, load_model,
                      threads_opt, token_opt)

_data_opt = typer.Option(None, "--data", help="Data set folder: indexes its photos (INDEX/image) and tag texts (INDEX/text).")
_images_opt = typer.Option(None, "--images", help="Image folder (searched recursively) or file; repeatable.")
_texts_opt = typer.Option(None, "--texts", help="Text file: one text per line, optionally 'ID<TAB>tags'.")
_batch_size_opt = typer.Option(32, "--batch-size", min=1)
_save_every_opt = typer.Option(2000, "--save-every", min=1, help="Checkpoint after this many additions.")
_quiet_opt = typer.Option(False, "--quiet", help="No progress bar.")
_json_opt = typer.Option(False, "--json", help="Print the summary as JSON.")


def _sources(data, images, texts, modality) -> list:
    import dagnn_runtime as dr

    given = [x for x in (data, images, texts) if x]
    if len(given) != 1:
        raise InputError("give exactly one of --data DIR, --images DIR|FILE, --texts FILE")
    if modality is not None and modality not in MODALITIES:
        raise InputError(f"--modality must be image or text, not {shorten(modality)}")
    if data:
        return dr.sources_from_data(data, [modality] if modality else MODALITIES)
    src = dr.source_from_images(images) if images else dr.source_from_texts(texts)
    if modality and modality != src.modality:
        raise InputError(f"--modality {modality} does not match the {src.modality} items given")
    return [src]


def _run_ingest(bundle, index_set, data, images, texts, modality, batch_size, loading: dict, save_every, quiet,
                as_json, create, index_options):
    """``loading``: threads, force_threads, expect_digest for ``load_model``."""
    import dagnn_runtime as dr

    model = load_model(bundle, **loading)
    reports = []
    for src in _sources(data, images, texts, modality):
        if not create and index_set.find(src.modality) is None:
            raise InputError(f"no {src.modality} index at {index_set.location}: create it with `dagnn index build`")
        # --data lays out INDEX/image and INDEX/text; a single source goes to INDEX itself unless it is such a parent
        index = index_set.open(src.modality, model=model, create=create, nested=bool(data),
                               capacity=max(len(src.ids), 16), **index_options)
        render.conversions([index])
        try:
            with render.progress(f"{src.modality} → {index.location}", len(src.ids), quiet) as on_progress:
                reports.append(dr.ingest(model, src, index, batch_size=batch_size, save_every=save_every,
                                         on_progress=on_progress))
        finally:  # closing writes the graph checkpoint that spares the next process a replay
            index.close()
    render.ingest_reports(reports, as_json)


@index_app.command("build")
def index_build(
    bundle: Path = bundle_opt,
    index: str = index_opt(aliases=("--out",)),
    data: Optional[Path] = _data_opt,
    images: Optional[List[Path]] = _images_opt,
    texts: Optional[Path] = _texts_opt,
    modality: Optional[str] = typer.Option(None, "--modality", help="image|text: with --data, index only one."),
    batch_size: int = _batch_size_opt,
    threads: Optional[int] = threads_opt,
    force_threads: bool = force_threads_opt,
    expect_digest: Optional[str] = expect_digest_opt,
    m: int = typer.Option(16, "--M", min=2, help="HNSW links per node."),
    ef_construction: int = typer.Option(200, "--ef-construction", min=1),
    ef: int = typer.Option(128, "--ef", min=1, help="Default search breadth stored with the index."),
    save_every: int = _save_every_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    from_embeddings: Optional[Path] = typer.Option(None, "--from-embeddings",
                                                   help="Load `dagnn embed` shards instead of encoding."),
    token: Optional[str] = token_opt,
):
    """Encode items with a bundle and index them (in a new index or one being resumed). Re-running skips ids
    already in the index."""
    index_set = open_index_set(index, token)
    options = {"M": m, "ef_construction": ef_construction, "ef": ef}
    loading = {"threads": threads, "force_threads": force_threads, "expect_digest": expect_digest}
    if from_embeddings is not None:
        return _load_embeddings(bundle, index_set, from_embeddings, [data, images, texts], options, as_json,
                                expect_digest)
    _run_ingest(bundle, index_set, data, images, texts, modality, batch_size, loading, save_every, quiet, as_json,
                create=True, index_options=options)


def _load_embeddings(bundle, index_set, folder, sources, options, as_json, expect_digest):
    from dagnn_runtime.embed import load_into

    if any(sources):
        raise InputError("--from-embeddings replaces --data/--images/--texts: give only one of them")
    model = load_model(bundle, expect_digest=expect_digest)
    index = index_set.open("image", model=model, create=True, **options)
    try:
        render.ingest_reports([load_into(index, folder)], as_json)
    finally:
        index.close()


@index_app.command("add")
def index_add(
    bundle: Path = bundle_opt,
    index: str = index_opt(),
    data: Optional[Path] = _data_opt,
    images: Optional[List[Path]] = _images_opt,
    texts: Optional[Path] = _texts_opt,
    modality: Optional[str] = typer.Option(None, "--modality", help="image|text: with --data, add only one."),
    batch_size: int = _batch_size_opt,
    threads: Optional[int] = threads_opt,
    force_threads: bool = force_threads_opt,
    expect_digest: Optional[str] = expect_digest_opt,
    save_every: int = _save_every_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    token: Optional[str] = token_opt,
):
    """Add items to an existing index (ids already present are skipped)."""
    loading = {"threads": threads, "force_threads": force_threads, "expect_digest": expect_digest}
    _run_ingest(bundle, open_index_set(index, token), data, images, texts, modality, batch_size, loading, save_every,
                quiet, as_json, create=False, index_options={})


@contextmanager
def _all_indexes(index: str, token):
    """Every index at ``--index``, each once, closed afterwards (a conversion of an old one is shown)."""
    from dagnn_runtime.engine import distinct_indexes

    opened = distinct_indexes(open_index_set(index, token).open_all())
    try:
        render.conversions(opened)
        yield opened
    finally:
        for ix in opened:
            ix.close()


@index_app.command("remove")
def index_remove(
    index: str = index_opt(),
    ids: List[str] = typer.Argument(..., help="Ids to remove (from every index at --index that holds them)."),
    token: Optional[str] = token_opt,
):
    """Remove items by id; they are never returned by queries again."""
    with _all_indexes(index, token) as opened:
        unknown = [i for i in ids if not any(i in ix for ix in opened)]
        if unknown:
            raise InputError(f"id {shorten(unknown[0])} is not in {index} ({len(unknown)} unknown ids); "
                             "nothing removed")
        for ix in opened:
            mine = [i for i in dict.fromkeys(ids) if i in ix]
            if mine:
                ix.remove(mine)
                ix.save()
                render.echo(f"{ix.location}: removed {len(mine)}, {len(ix)} items left")


@index_app.command("info")
def index_info(
    index: str = index_opt(),
    as_json: bool = _json_opt,
    token: Optional[str] = token_opt,
):
    """Size, dimension, modality, embedding space and HNSW parameters of an index."""
    with _all_indexes(index, token) as opened:
        render.index_infos([dict(path=str(ix.location), **ix.info()) for ix in opened], as_json)


@index_app.command("upgrade")
def index_upgrade(
    bundle: Path = bundle_opt,
    index: str = index_opt(),
    token: Optional[str] = token_opt,
    expect_digest: Optional[str] = expect_digest_opt,
):
    """Give items indexed by an older dagnn the fields every item now has (predicted labels, which the
    labels filter uses) and store photo paths relative to the index. Resumable: run it again after an
    interruption. Run it from the folder the index was built from if its photo paths were given relative."""
    from dagnn_runtime.items import upgrade

    model = load_model(bundle, expect_digest=expect_digest)
    with _all_indexes(index, token) as opened:
        for ix in opened:
            render.echo(f"{ix.location}: {upgrade(model, ix)} of {len(ix)} items upgraded")
