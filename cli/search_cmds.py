"""``dagnn query`` and ``dagnn tag``: the runtime's ``Searcher``, rendered."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dagnn_runtime.constants import MODALITIES
from dagnn_runtime.errors import InputError, shorten

from . import render
from .app import app
from .options import (bundle_opt, checked_threads, expect_digest_opt, force_threads_opt, index_opt, open_index_set,
                      threads_opt, token_opt)


@app.command()
def query(
    bundle: Path = bundle_opt,
    index: str = index_opt(),
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
    token: Optional[str] = token_opt,
):
    """Retrieve the items most similar to an image or a text (Image2Text / Text2Image by default)."""
    from dagnn_runtime import Searcher

    if (image is None) == (text is None):
        raise InputError("give exactly one of --image FILE or --text 'tags'")
    if target is not None and target not in MODALITIES:
        raise InputError(f"--target must be image or text, not {shorten(target)}")
    checked_threads(threads, force_threads)
    searcher = Searcher.open(bundle, open_index_set(index, token), threads=threads, force_threads=force_threads,
                             expect_digest=expect_digest, ready_for="image" if image is not None else "text",
                             target=target)
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
