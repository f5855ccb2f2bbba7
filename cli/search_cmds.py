"""``dagnn query`` and ``dagnn tag``: the runtime's ``Searcher``, rendered."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dagnn_runtime.constants import MODALITIES
from dagnn_runtime.errors import InputError, shorten

from . import render
from .app import app
from .options import bundle_opt, checked_threads, expect_digest_opt, force_threads_opt, threads_opt


@app.command()
def query(
    bundle: Path = bundle_opt,
    index: str = typer.Option(..., "--index", help="Index folder, a parent holding image/ and text/, or a "
                                                  "Milvus *.db path or http(s):// URI."),
    image: Optional[Path] = typer.Option(None, "--image", help="Query with this image."),
    text: Optional[str] = typer.Option(None, "--text", help="Query with these tags, e.g. 'sky, clouds'."),
    k: int = typer.Option(10, "--k", min=1, help="Number of results."),
    target: Optional[str] = typer.Option(None, "--target", help="image|text: what to retrieve (default: the "
                                                                 "other modality, or the index's own)."),
    ef: Optional[int] = typer.Option(None, "--ef", min=1, help="HNSW search breadth (default: the index's)."),
    exact: bool = typer.Option(False, "--exact", help="Brute-force search instead of HNSW."),
    threads: Optional[int] = threads_opt,
    force_threads: bool = force_threads_opt,
    expect_digest: Optional[str] = expect_digest_opt,
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
):
    """Retrieve the items most similar to an image or a text (Image2Text / Text2Image by default)."""
    from dagnn_runtime import Searcher, locate_index

    if (image is None) == (text is None):
        raise InputError("give exactly one of --image FILE or --text 'tags'")
    if target is not None and target not in MODALITIES:
        raise InputError(f"--target must be image or text, not {shorten(target)}")
    checked_threads(threads, force_threads)
    if locate_index(index) is None:  # a parent holding image/ and text/: the other modality unless told
        target = target or ("text" if image is not None else "image")
        if locate_index(index, target) is None:
            raise InputError(f"no {target} index at {index} (expected {index}/index.db or "
                             f"{index}/{target}/index.db)")
        index = locate_index(index, target)  # open only the index this query searches
    searcher = Searcher.open(bundle, index, threads=threads, force_threads=force_threads,
                             expect_digest=expect_digest, ready_for="image" if image is not None else "text")
    render.conversions(searcher.indexes.values())
    try:
        result = searcher.search(image=image, text=text, target=target, k=k, ef=ef, exact=exact)
        if result.ignored_tags:
            render.note(f"note: ignoring tags not in the vocabulary: {', '.join(result.ignored_tags)}")
        render.search_result(result, k, len(searcher.indexes[result.target]), as_json)
    finally:
        searcher.close()


@app.command()
def tag(
    bundle: Path = bundle_opt,
    image: List[Path] = typer.Option(..., "--image", help="Image(s) to tag; repeatable."),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="At most this many labels per image."),
    threads: Optional[int] = threads_opt,
    force_threads: bool = force_threads_opt,
    expect_digest: Optional[str] = expect_digest_opt,
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
):
    """Labels whose score passes the bundle's calibrated threshold, best first."""
    from dagnn_runtime import Searcher

    checked_threads(threads, force_threads)
    searcher = Searcher.open(bundle, threads=threads, force_threads=force_threads, expect_digest=expect_digest)
    render.tag_results(searcher.tag(list(image), top=top), as_json)
