"""Everything the commands show: rich tables, progress bars and JSON. Commands compute, this module renders.

rich is imported inside the functions so that ``dagnn --help`` stays quick.
"""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager

import typer

from dagnn_runtime.errors import shorten


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


@contextmanager
def progress(description: str, total: int | None, quiet: bool):
    """A transient progress bar on stderr; yields the ``on_progress(n_done)`` callback the library calls."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console(stderr=True), disable=quiet, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def jsonable(obj):
    """Numpy scalars and arrays as plain numbers and lists (anything else is refused, as json does)."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def finite(obj):
    """JSON has no infinity or NaN: every non-finite float in ``obj`` (nested dicts and lists too) becomes null."""
    if type(obj).__module__ == "numpy":
        obj = jsonable(obj)
    if isinstance(obj, dict):
        return {key: finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(value) for value in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def echo_json(obj) -> None:
    """Valid JSON on stdout: numpy values made plain, infinities made null."""
    typer.echo(json.dumps(finite(obj), indent=2, ensure_ascii=False, allow_nan=False))


def note(message: str) -> None:
    typer.echo(message, err=True)


def conversions(indexes) -> None:
    """One note per index that opening converted from the version-1 format (once, in place)."""
    for ix in indexes:
        if getattr(ix, "converted", False):
            note(f"note: converted the index at {ix.location} to the current format (index.db)")


# ---- index ---------------------------------------------------------------------------------------------
def ingest_reports(reports, as_json: bool) -> None:
    for r in reports:
        for line in r.skipped[:10]:
            note(f"warning: skipped {line}")
        if len(r.skipped) > 10:
            note(f"warning: … and {len(r.skipped) - 10} more skipped items")
    if as_json:
        echo_json([{"index": r.index, "modality": r.modality, "added": r.added, "already_present": r.already_present,
                    "skipped": len(r.skipped), "duplicate_ids": r.duplicate_ids, "items": r.items} for r in reports])
        return
    for r in reports:
        typer.echo(f"{r.modality} index {r.index}: {r.items} items (added {r.added}, already present "
                   f"{r.already_present}, skipped {len(r.skipped)})")


def index_infos(infos: list, as_json: bool) -> None:
    if as_json:
        echo_json(infos)
        return
    from rich.table import Table

    table = Table("index", "modality", "items", "removed", "dim", "M", "ef", "embedding space")
    for i in infos:
        table.add_row(i["path"], str(i["modality"]), str(i["items"]), str(i["removed"]), str(i["dim"]),
                      str(i["M"]), str(i["ef"]), i["embedding_space"][:16] + "…")
    console().print(table)
    for i in infos:  # in full, so that it can be pasted into --expect-digest
        typer.echo(f"{i['path']}: built with bundle {i.get('bundle_digest') or 'not recorded (an older index)'}")


# ---- search and tag --------------------------------------------------------------------------------------
def _item_text(meta: dict) -> str:
    if "path" in meta:  # shorter relative to the working directory when below it
        rel = os.path.relpath(meta["path"]) if os.path.isabs(meta["path"]) else meta["path"]
        return meta["path"] if rel.startswith("..") else rel
    if "tags" in meta:
        return ", ".join(meta["tags"])
    return meta.get("text", "")


def search_result(result, k: int, items: int, as_json: bool) -> None:
    """``items``: how many items the searched index holds (for the table's title)."""
    if as_json:
        echo_json({"query": {result.source: result.query}, "target": result.target, "index": result.index, "k": k,
                   "results": [{"rank": r, "id": h.id, "score": h.score, "metadata": h.metadata}
                               for r, h in enumerate(result.hits, 1)]})
        return
    from rich.table import Table

    table = Table("rank", "score", "id", title=f"{result.source} {shorten(result.query)} → {result.target} ({items} items)")
    table.add_column("item", overflow="fold")
    table.add_column("labels")
    for rank, h in enumerate(result.hits, 1):
        table.add_row(str(rank), f"{h.score:.4f}", h.id, _item_text(h.metadata), ", ".join(h.metadata.get("labels", [])))
    console().print(table)


def _threshold(value) -> str:
    return "inf" if value is None else f"{value:.4f}"


def tag_results(results, as_json: bool) -> None:
    if as_json:
        echo_json([{"image": r.item, "labels": [{"label": s.label, "score": s.score, "threshold": s.threshold}
                                                for s in r.labels]} for r in results])
        return
    from rich.table import Table

    out = console()
    for r in results:
        if not r.labels:
            b = r.best
            limit = "inf" if b.threshold is None else f"{b.threshold:.3f}"
            out.print(f"{r.item}: no label passes its threshold (best: {b.label} {b.score:.3f} < {limit})",
                      markup=False)
            continue
        table = Table("label", "score", "threshold", title=r.item)
        for s in r.labels:
            table.add_row(s.label, f"{s.score:.4f}", _threshold(s.threshold))
        out.print(table)


# ---- eval --------------------------------------------------------------------------------------------------
def eval_result(result: dict, claimed: dict, title: str, as_json: bool) -> None:
    """The metrics, beside what the bundle claims for them when it claims anything."""
    if as_json:
        echo_json(result)
        return
    from rich.table import Table

    rows = [("I2T mAP", result["i2t"], claimed.get("i2t")), ("T2I mAP", result["t2i"], claimed.get("t2i")),
            ("average mAP", result["avg"], claimed.get("avg"))]
    if "map_at_k" in result:
        at = result["map_at_k"]
        rows += [(f"I2T mAP@{at['k']}", at["i2t"], None), (f"T2I mAP@{at['k']}", at["t2i"], None),
                 (f"average mAP@{at['k']}", at["avg"], None)]
    tagging = result.get("tagging", {})
    rows += [(f"tagging {key}", tagging[key], claimed.get(f"tagging.{key}"))
             for key in ("mean_ap", "CF1", "OF1") if key in tagging]
    table = Table("metric", "value", *(["bundle claims"] if claimed else []), title=title)
    for name, value, claim in rows:
        table.add_row(name, f"{value:.4f}", *([f"{claim:.4f}" if claim is not None else ""] if claimed else []))
    console().print(table)
    for name, path in result.get("plots", {}).items():
        console().print(f"figure {name}: {path}")
