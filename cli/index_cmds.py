"""``dagnn index build|add|remove|info``: fill and maintain indexes with the runtime's ``ingest``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dagnn_runtime.constants import MODALITIES
from dagnn_runtime.errors import InputError, shorten

from . import render
from .app import index_app
from .options import bundle_opt, expect_digest_opt, force_threads_opt, load_model, threads_opt

_data_opt = typer.Option(None, "--data", help="Data set folder: indexes its photos (INDEX/image) and tag texts (INDEX/text).")
_images_opt = typer.Option(None, "--images", help="Image folder (searched recursively) or file; repeatable.")
_texts_opt = typer.Option(None, "--texts", help="Text file: one text per line, optionally 'ID<TAB>tags'.")
backend_opt = typer.Option(None, "--backend", help="hnsw (a folder) | milvus (--uri); default: from the location.")
uri_opt = typer.Option(None, "--uri", help="Milvus: a *.db Milvus Lite path or http(s)://host:19530 (instead of a folder).")
token_opt = typer.Option(None, "--token", envvar="DAGNN_MILVUS_TOKEN", help="Milvus server token.")
_batch_size_opt = typer.Option(32, "--batch-size", min=1)
_save_every_opt = typer.Option(2000, "--save-every", min=1, help="Checkpoint after this many additions.")
_quiet_opt = typer.Option(False, "--quiet", help="No progress bar.")
_json_opt = typer.Option(False, "--json", help="Print the summary as JSON.")


def _where(folder, uri, backend):
    """The index location: a folder (hnsw) or a Milvus URI; and whether it is Milvus."""
    if (folder is None) == (uri is None):
        raise InputError("give an index folder (--out/--index) or a Milvus --uri, not both or neither")
    if backend not in (None, "hnsw", "milvus") or (backend and (backend == "milvus") != (uri is not None)):
        raise InputError("--backend milvus goes with --uri, --backend hnsw with an index folder")
    return (uri, True) if uri is not None else (folder, False)


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


def _run_ingest(bundle, out, data, images, texts, modality, batch_size, loading: dict, save_every, quiet,
                as_json, create, index_options, milvus=False):
    """``loading``: threads, force_threads, expect_digest for ``load_model``."""
    import dagnn_runtime as dr

    model = load_model(bundle, **loading)
    reports = []
    for src in _sources(data, images, texts, modality):
        # --data lays out INDEX/image and INDEX/text; single sources go to INDEX itself unless it is such a parent
        folder = out if milvus else dr.locate_index(out, src.modality) or (out / src.modality if data else out)
        if not create and dr.locate_index(folder, src.modality if milvus else None) is None:
            raise InputError(f"no index at {folder}: create it with `dagnn index build`")
        index = dr.open_index(folder, model=model, modality=src.modality, create=create,
                              capacity=max(len(src.ids), 16), **index_options)
        render.conversions([index])
        try:
            with render.progress(f"{src.modality} → {folder}", len(src.ids), quiet) as on_progress:
                reports.append(dr.ingest(model, src, index, batch_size=batch_size, save_every=save_every,
                                         on_progress=on_progress))
        finally:  # closing writes the graph checkpoint that spares the next process a replay
            index.close()
    render.ingest_reports(reports, as_json)


@index_app.command("build")
def index_build(
    bundle: Path = bundle_opt,
    out: Optional[Path] = typer.Option(None, "--out", help="Index folder to create (or resume)."),
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
    backend: Optional[str] = backend_opt, uri: Optional[str] = uri_opt, token: Optional[str] = token_opt,
):
    """Encode items with a bundle and index them. Re-running skips ids already in the index."""
    where, milvus = _where(out, uri, backend)
    options = {"M": m, "ef_construction": ef_construction, "ef": ef, **({"token": token} if milvus else {})}
    loading = {"threads": threads, "force_threads": force_threads, "expect_digest": expect_digest}
    if from_embeddings is not None:
        return _load_embeddings(bundle, where, from_embeddings, [data, images, texts], options, as_json, milvus,
                                expect_digest)
    _run_ingest(bundle, where, data, images, texts, modality, batch_size, loading, save_every, quiet, as_json,
                create=True, index_options=options, milvus=milvus)


def _load_embeddings(bundle, where, folder, sources, options, as_json, milvus, expect_digest):
    import dagnn_runtime as dr
    from dagnn_runtime.embed import load_into

    if any(sources):
        raise InputError("--from-embeddings replaces --data/--images/--texts: give only one of them")
    model = load_model(bundle, expect_digest=expect_digest)
    target = where if milvus else dr.locate_index(where, "image") or where
    index = dr.open_index(target, model=model, modality="image", create=True, **options)
    render.ingest_reports([load_into(index, folder)], as_json)
    index.close()


@index_app.command("add")
def index_add(
    bundle: Path = bundle_opt,
    index: Optional[Path] = typer.Option(None, "--index", help="Existing index folder (or a --data parent)."),
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
    backend: Optional[str] = backend_opt, uri: Optional[str] = uri_opt, token: Optional[str] = token_opt,
):
    """Add items to an existing index (ids already present are skipped)."""
    where, milvus = _where(index, uri, backend)
    loading = {"threads": threads, "force_threads": force_threads, "expect_digest": expect_digest}
    _run_ingest(bundle, where, data, images, texts, modality, batch_size, loading, save_every, quiet, as_json,
                create=False, index_options={"token": token} if milvus else {}, milvus=milvus)


def _all_indexes(path, milvus: bool = False) -> list:
    """(location, modality): ``path`` when it is an index, else its image/ and text/ indexes (Milvus: the
    collections of each modality at the URI)."""
    from dagnn_runtime import locate_index

    if milvus:
        found = [(path, m) for m in MODALITIES if locate_index(path, m)]
        if not found:
            raise InputError(f"no dagnn collections at {path}")
        return found
    single = locate_index(path)
    found = [single] if single else [path / m for m in MODALITIES if locate_index(path, m)]
    if not found:
        raise InputError(f"no index at {path} (expected index.db there or in {path}/image, {path}/text)")
    return [(folder, None) for folder in found]


@index_app.command("remove")
def index_remove(
    index: Optional[Path] = typer.Option(None, "--index", help="Index folder (or a --data parent: removes from both)."),
    ids: List[str] = typer.Argument(..., help="Ids to remove."),
    backend: Optional[str] = backend_opt, uri: Optional[str] = uri_opt, token: Optional[str] = token_opt,
):
    """Remove items by id; they are never returned by queries again."""
    from dagnn_runtime import open_index

    where, milvus = _where(index, uri, backend)
    extra = {"token": token} if milvus else {}
    opened = {f"{loc} ({m})" if m else loc: open_index(loc, modality=m, **extra) for loc, m in _all_indexes(where, milvus)}
    render.conversions(opened.values())
    unknown = [i for i in ids if not any(i in ix for ix in opened.values())]
    if unknown:
        raise InputError(f"id {shorten(unknown[0])} is not in {where} ({len(unknown)} unknown ids); nothing removed")
    for folder, ix in opened.items():
        mine = [i for i in dict.fromkeys(ids) if i in ix]
        if mine:
            ix.remove(mine)
            ix.save()
            typer.echo(f"{folder}: removed {len(mine)}, {len(ix)} items left")


@index_app.command("info")
def index_info(
    index: Optional[Path] = typer.Option(None, "--index", help="Index folder (or a --data parent)."),
    as_json: bool = _json_opt,
    backend: Optional[str] = backend_opt, uri: Optional[str] = uri_opt, token: Optional[str] = token_opt,
):
    """Size, dimension, modality, embedding space and HNSW parameters of an index."""
    from dagnn_runtime import open_index

    where, milvus = _where(index, uri, backend)
    extra = {"token": token} if milvus else {}
    opened = [open_index(loc, modality=m, **extra) for loc, m in _all_indexes(where, milvus)]
    render.conversions(opened)
    render.index_infos([dict(path=str(ix.location), **ix.info()) for ix in opened], as_json)
