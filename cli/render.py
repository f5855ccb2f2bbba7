"""Everything the commands show: tables, progress bars and JSON. Commands compute, this module renders.

Tables are plain aligned columns (``table``); rich draws only the progress bars, and is imported inside
``progress`` so that commands without one never pay for it.

Ids, paths, tags and labels come from users and files, so nothing is printed raw: every character that is
not printable (a terminal escape's ESC, a bidi override, a zero-width space, a line break inside a value)
is shown as its escape, ``\\x1b`` or ``\\u202e`` (``visible``), in every table and line; JSON output
escapes them as ``\\u001b`` / ``\\u202e`` (``echo_json``).
"""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager

import typer

from dagnn_runtime.errors import shorten


def visible(text) -> str:
    """``text`` with every character that is not printable (categories Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs but the
    ASCII space) written as its Python escape (``\\x1b``, ``\\u202e``, ``\\U000f0000``): what reaches the
    terminal can neither move the cursor, recolour, reorder nor hide text."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ord(ch)) for ch in text)


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def echo(text, err: bool = False) -> None:
    """One line (or several: each made ``visible``) on stdout, or stderr with ``err``."""
    typer.echo("\n".join(visible(line) for line in str(text).split("\n")), err=err)


def table(headers, rows, title: str | None = None) -> None:
    """Aligned plain-text columns on stdout, under an optional title line. Not a rich table: a ``dagnn query``
    process would import and run rich for one small table, start-up time it pays for nothing. Every cell and
    the title are made ``visible``."""
    rows = [[visible(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = [visible(title)] if title else []
    for row in [list(headers), ["-" * w for w in widths], *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    typer.echo("\n".join(lines))


@contextmanager
def progress(description: str, total: int | None, quiet: bool):
    """A transient progress bar on stderr; yields the ``on_progress(n_done)`` callback the library calls."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True, highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=quiet or not console.is_terminal, transient=True) as bar:
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
    """Valid JSON on stdout: numpy values made plain, infinities made null. Letters stay readable
    (``ensure_ascii=False``), but every character that is not printable is escaped as ``\\uXXXX``: json
    escapes only U+0000–U+001F itself, and would print C1 controls, bidi overrides and lone surrogates raw."""
    text = json.dumps(finite(obj), indent=2, ensure_ascii=False, allow_nan=False)
    if not text.replace("\n", "").isprintable():  # outside strings there are only spaces and line breaks
        text = "".join(ch if ch.isprintable() or ch == "\n" else _json_escape(ord(ch)) for ch in text)
    typer.echo(text)


def _json_escape(code: int) -> str:
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON spells characters beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def note(message: str) -> None:
    echo(message, err=True)


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
        echo(f"{r.modality} index {r.index}: {r.items} items (added {r.added}, already present "
                   f"{r.already_present}, skipped {len(r.skipped)})")


def index_infos(infos: list, as_json: bool) -> None:
    if as_json:
        echo_json(infos)
        return
    table(("index", "modality", "items", "removed", "dim", "M", "ef", "embedding space"),
          [(i["path"], i["modality"], i["items"], i["removed"], i["dim"], i["M"], i["ef"],
            i["embedding_space"][:16] + "…") for i in infos])
    for i in infos:  # in full, so that it can be pasted into --expect-digest
        echo(f"{i['path']}: built with bundle {i.get('bundle_digest') or 'not recorded (an older index)'}")


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
    table(("rank", "score", "id", "item", "labels"),
          [(rank, f"{h.score:.4f}", h.id, _item_text(h.metadata), ", ".join(h.metadata.get("labels", [])))
           for rank, h in enumerate(result.hits, 1)],
          title=f"{result.source} {shorten(result.query)} → {result.target} ({items} items)")


def _threshold(value) -> str:
    return "inf" if value is None else f"{value:.4f}"


def tag_results(results, as_json: bool) -> None:
    if as_json:
        echo_json([{"image": r.item, "labels": [{"label": s.label, "score": s.score, "threshold": s.threshold}
                                                for s in r.labels]} for r in results])
        return
    for r in results:
        if not r.labels:
            b = r.best
            limit = "inf" if b.threshold is None else f"{b.threshold:.3f}"
            echo(f"{r.item}: no label passes its threshold (best: {b.label} {b.score:.3f} < {limit})")
            continue
        table(("label", "score", "threshold"), [(s.label, f"{s.score:.4f}", _threshold(s.threshold)) for s in r.labels],
              title=r.item)


# ---- eval --------------------------------------------------------------------------------------------------
def eval_result(result: dict, claimed: dict, title: str, as_json: bool) -> None:
    """The metrics, beside what the bundle claims for them when it claims anything."""
    if as_json:
        echo_json(result)
        return
    rows = [("I2T mAP", result["i2t"], claimed.get("i2t")), ("T2I mAP", result["t2i"], claimed.get("t2i")),
            ("average mAP", result["avg"], claimed.get("avg"))]
    if "map_at_k" in result:
        at = result["map_at_k"]
        rows += [(f"I2T mAP@{at['k']}", at["i2t"], None), (f"T2I mAP@{at['k']}", at["t2i"], None),
                 (f"average mAP@{at['k']}", at["avg"], None)]
    tagging = result.get("tagging", {})
    rows += [(f"tagging {key}", tagging[key], claimed.get(f"tagging.{key}"))
             for key in ("mean_ap", "CF1", "OF1") if key in tagging]
    table(("metric", "value", *(["bundle claims"] if claimed else [])),
          [(name, f"{value:.4f}", *([f"{claim:.4f}" if claim is not None else ""] if claimed else []))
           for name, value, claim in rows], title=title)
    for name, path in result.get("plots", {}).items():
        echo(f"figure {name}: {path}")
