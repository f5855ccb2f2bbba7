"""The demo's HTML report: one self-contained page plus its thumbnails, movable as a folder.

``write_report(results, out_dir)`` writes ``out_dir/report.html`` and ``out_dir/report_files/*.jpg``.
Every link in the page is relative and there is no external asset (no CDN, no script): loss curves
are inline SVG (``report_parts``, with the style sheet and the words that explain the metrics). ``results`` is a plain dict (see ``write_report``) so that the page
can be built and tested without training anything.

Layout: one column on a phone; from about 1000 px wide two things share each row (CSS grid, no script):
the retrieval and tagging metrics, the tagged photo and the training curves, the two figures (drawn by
``plots`` to be read at that size; each links to its full-size PNG). Examples that ask with the same query
share one query card, long tag lists are cut with a count, and the timings fold away (``<details>``).
Tagging metrics (CP, CR, CF1, OF1) are explained in words beside their values.
"""
from __future__ import annotations

import hashlib
import html
import math
import os
from pathlib import Path

from PIL import Image

from dagnn_runtime.atomic import atomic_write_text

from .report_parts import CSS, MAP_NOTE, TAGGING_TERMS, svg_line_chart

FILES_DIR = "report_files"
THUMB_SIZE = 160

MAX_TAGS = 6      # tags shown on a card; the rest are counted, and listed in its tooltip
WIDE_FIGURE_PX = 1300  # a figure drawn wider than this (many labels) takes a whole row of the grid


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class _Thumbs:
    """Downscaled copies of the photos the page shows, under ``out_dir/report_files/``."""

    def __init__(self, out_dir: Path, size: int = THUMB_SIZE):
        self.out_dir = out_dir
        self.dir = out_dir / FILES_DIR
        self.size = size
        self.done: dict[str, str] = {}

    def rel(self, src) -> str | None:
        """Relative URL of the thumbnail of ``src`` (made once), or None when there is no image."""
        if src is None:
            return None
        src = Path(src)
        key = os.fspath(src.resolve())
        if key not in self.done:
            digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
            name = f"{src.stem}-{digest}.jpg"
            self.dir.mkdir(parents=True, exist_ok=True)
            with Image.open(src) as img:
                img = img.convert("RGB")
                img.thumbnail((self.size, self.size), Image.BICUBIC)
                img.save(self.dir / name, "JPEG", quality=85)
            self.done[key] = f"{FILES_DIR}/{name}"
        return self.done[key]


def _labels_html(labels, reference=None) -> str:
    """Label chips; with ``reference`` (the query's labels), shared labels are highlighted."""
    if not labels:
        return '<span class="muted">no label</span>'
    ref = set(reference or ())
    return " ".join(f'<span class="lab{" ok" if name in ref else ""}">{_e(name)}</span>' for name in labels)


def _tags_html(tags) -> str:
    """The first ``MAX_TAGS`` tags, then how many more (all of them in the tooltip)."""
    tags = list(tags)
    if not tags:
        return '<div class="tags muted">(no tag)</div>'
    shown = ", ".join(tags[:MAX_TAGS]) + (f" … +{len(tags) - MAX_TAGS} more" if len(tags) > MAX_TAGS else "")
    title = f' title="{_e(", ".join(tags))}"' if len(tags) > MAX_TAGS else ""
    return f'<div class="tags"{title}>{_e(shown)}</div>'


def _card(thumbs: _Thumbs, item: dict, rank: int | None = None, query_labels=None, is_query=False) -> str:
    src = thumbs.rel(item.get("image"))
    relevant = query_labels is not None and bool(set(item.get("labels", ())) & set(query_labels))
    cls = "card qry" if is_query else ("card hit" if relevant else "card")
    if src is None:
        cls += " text"
    head = ""
    if rank is not None:
        head = f'<div><span class="rank">#{rank}</span>'
        if item.get("score") is not None:
            head += f'<span class="score">{_fmt(float(item["score"]), 3)}</span>'
        head += "</div>"
    elif is_query:
        head = '<div><span class="rank">query</span></div>'
    pic = f'<img src="{_e(src)}" alt="{_e(Path(item["image"]).name)}">' if src else ""
    return (f'<div class="{cls}">{head}{pic}{_tags_html(item.get("tags", ()))}'
            f'<div>{_labels_html(item.get("labels", ()), query_labels)}</div></div>')


def _query_card(thumbs: _Thumbs, query: dict) -> str:
    if query.get("image") is not None:
        return _card(thumbs, query, is_query=True)
    return (f'<div class="card qry"><div><span class="rank">query text</span></div>'
            f'<div class="tags"><b>{_e(query.get("text", ""))}</b></div>'
            f'<div>{_labels_html(query.get("labels") or [])}</div></div>')


def _same_query(a: dict, b: dict) -> bool:
    return (a.get("image"), a.get("text")) == (b.get("image"), b.get("text"))


def _query_groups(queries: list) -> list[list]:
    """Consecutive examples that ask with the same query (e.g. one photo → texts, then → photos)."""
    groups: list[list] = []
    for q in queries:
        if groups and _same_query(groups[-1][0]["query"], q["query"]):
            groups[-1].append(q)
        else:
            groups.append([q])
    return groups


def _query_group(thumbs: _Thumbs, group: list) -> str:
    """One query card beside the result rows of every example that asked with it."""
    query = group[0]["query"]
    qlabels = query.get("labels") or []
    rows = []
    for q in group:
        desc = f' <span class="desc">{_e(q["description"])}</span>' if q.get("description") else ""
        cards = "".join(_card(thumbs, r, rank=i + 1, query_labels=qlabels) for i, r in enumerate(q["results"]))
        hits = ""
        if qlabels:
            n = sum(bool(set(r.get("labels", ())) & set(qlabels)) for r in q["results"])
            hits = (f'<p class="hits">{n} of {len(q["results"])} results share a label with the query '
                    f'(green frame).</p>')
        rows.append(f'<div class="qrow"><h3>{_e(q["kind"])}{desc}</h3><div class="results">{cards}</div>'
                    f'{hits}</div>')
    return f'<div class="query">{_query_card(thumbs, query)}<div class="qrows">{"".join(rows)}</div></div>'


def _tagging_section(thumbs: _Thumbs, t: dict) -> str:
    true, pred = set(t.get("true", ())), [p["label"] for p in t.get("predicted", ())]
    rows = []
    for p in t.get("predicted", ()):
        mark = "correct" if p["label"] in true else "not a true label"
        rows.append(f'<tr><td><span class="lab {"ok" if p["label"] in true else "extra"}">{_e(p["label"])}'
                    f'</span></td><td class="num">{_fmt(float(p["score"]), 3)}</td>'
                    f'<td class="num">{_fmt(p.get("threshold"), 3)}</td><td>{mark}</td></tr>')
    missed = [name for name in t.get("true", ()) if name not in pred]
    photo = _card(thumbs, {"image": t["image"], "tags": t.get("tags", ()), "labels": t.get("true", ())},
                  is_query=True)
    table = ('<table><tr><th>predicted label</th><th class="num">score</th><th class="num">threshold</th>'
             '<th></th></tr>'
             + ("".join(rows) or '<tr><td colspan="4" class="muted">no label above its threshold</td></tr>')
             + "</table>")
    missed_html = ("<p>True labels not predicted: " + " ".join(
        f'<span class="lab miss">{_e(m)}</span>' for m in missed) + "</p>") if missed else ""
    true_html = f'<p>True labels: {_labels_html(t.get("true", ()))}</p>'
    return (f'<div class="query">{photo}<div class="qrows">{true_html}{table}{missed_html}'
            '<p class="note">A label is predicted when its score reaches its threshold (calibrated on the '
            'validation split).</p></div></div>')


def _metrics_section(metrics: dict) -> str:
    rows = []
    for name, m in metrics.get("retrieval", {}).items():
        rows.append(f'<tr><td>{_e(name)}</td><td class="num">{_fmt(m.get("i2t"))}</td>'
                    f'<td class="num">{_fmt(m.get("t2i"))}</td><td class="num">{_fmt(m.get("avg"))}</td></tr>')
    note = f'<p class="note">{_e(metrics["note"])}</p>' if metrics.get("note") else ""
    retrieval = ('<div><h3>Retrieval</h3><table><tr><th></th><th class="num">Image2<wbr>Text mAP</th>'
                 '<th class="num">Text2<wbr>Image mAP</th><th class="num">average</th></tr>' + "".join(rows)
                 + f'</table><p class="note">{_e(MAP_NOTE)}</p>{note}</div>')
    tagging = metrics.get("tagging")
    tag_html = ""
    if tagging:
        trs = "".join(f'<tr><th scope="row">{_e(name)}</th><td class="num">{_fmt(tagging[key])}</td>'
                      f'<td class="what">{_e(what)}</td></tr>'
                      for key, (name, what) in TAGGING_TERMS.items() if key in tagging)
        tag_html = ('<div><h3>Tagging</h3><table><tr><th>metric</th><th class="num">value</th>'
                    f'<th>what it measures</th></tr>{trs}</table></div>')
    return f'<div class="grid2">{retrieval}{tag_html}</div>'


def _timing_section(stages: list[dict]) -> str:
    cpu = all("cpu_seconds" in s for s in stages)
    rows = "".join(f'<tr><td>{_e(s["name"])}</td><td class="num">{s["seconds"]:.1f} s</td>'
                   + (f'<td class="num">{s["cpu_seconds"]:.1f} s</td>' if cpu else "")
                   + f'<td>{_e(s.get("detail", ""))}</td></tr>' for s in stages)
    total = sum(s["seconds"] for s in stages)
    total_cpu = f'<th class="num">{sum(s["cpu_seconds"] for s in stages):.1f} s</th>' if cpu else ""
    return ('<table><tr><th>stage</th><th class="num">wall time</th>' + ('<th class="num">CPU time</th>' if cpu else "")
            + '<th>what it did</th></tr>' + rows
            + f'<tr><th>total</th><th class="num">{total:.1f} s</th>{total_cpu}<th></th></tr></table>')


def _figure(out_dir: Path, caption: str, src: str) -> str:
    """A figure of the grid, linked to its full-size PNG; its pixel size is written so the page does not jump."""
    size, wide = "", False
    try:
        with Image.open(out_dir / src) as im:
            width, height = im.size
        size, wide = f' width="{width}" height="{height}"', width > WIDE_FIGURE_PX
    except (OSError, ValueError):
        pass
    cls = ' class="wide"' if wide else ""
    return (f'<figure{cls}><a href="{_e(src)}"><img src="{_e(src)}" '
            f'alt="{_e(caption)}"{size}></a><figcaption>{_e(caption)} '
            f'<a class="muted" href="{_e(src)}">(full size)</a></figcaption></figure>')


def _folding(title: str, summary: str, body: str, open_: bool) -> str:
    """A section that folds: its heading is the ``<summary>``."""
    extra = f' <span class="muted">{_e(summary)}</span>' if summary else ""
    return (f'<details class="sec"{" open" if open_ else ""}><summary><h2>{_e(title)}</h2>{extra}</summary>'
            f"{body}</details>")


def render_report(results: dict, out_dir) -> str:
    """The page's HTML (making the thumbnails it links to as a side effect)."""
    out_dir = Path(out_dir)
    thumbs = _Thumbs(out_dir)
    body = [f'<h1>{_e(results.get("title", "dagnn demo"))}</h1>']
    if results.get("subtitle"):
        body.append(f'<p class="sub">{_e(results["subtitle"])}</p>')
    if results.get("metrics"):
        body.append("<h2>Test metrics</h2>" + _metrics_section(results["metrics"]))
    if results.get("queries"):
        body.append("<h2>Example queries</h2>")
        body.extend(_query_group(thumbs, g) for g in _query_groups(results["queries"]))
    # The tagged photo and the training curves share a row at wide widths (each alone otherwise).
    pair = []
    if results.get("tagging"):
        pair.append("<section><h2>Tagging a held-out photo</h2>"
                    + _tagging_section(thumbs, results["tagging"]) + "</section>")
    curves = results.get("curves") or {}
    if curves:
        charts = []
        for name, curve in curves.items():
            values, mark = (curve["values"], curve.get("mark")) if isinstance(curve, dict) else (curve, None)
            charts.append(svg_line_chart(name, values, mark=mark,
                                         color="#cc5533" if "loss" in name.lower() else "#3366cc"))
        note = results.get("curves_note")
        pair.append("<section>" + _folding("Training curves", "", (f'<p class="note">{_e(note)}</p>' if note else "")
                                           + '<div class="charts">' + "".join(charts) + "</div>", open_=True)
                    + "</section>")
    if pair:
        body.append('<div class="grid2">' + "".join(pair) + "</div>" if len(pair) == 2 else pair[0])
    if results.get("figures"):
        body.append("<h2>Figures</h2>" + '<div class="figs">' + "".join(
            _figure(out_dir, caption, src) for caption, src in results["figures"].items()) + "</div>")
    if results.get("stages"):
        stages = results["stages"]
        body.append(_folding("Timing", f'{sum(s["seconds"] for s in stages):.1f} s in all, {len(stages)} stages '
                             "(open for each one)", _timing_section(stages), open_=False))
    if results.get("next_command"):
        body.append('<h2>Try it yourself</h2><pre class="cmd">' + _e(results["next_command"]) + "</pre>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{_e(results.get("title", "dagnn demo"))}</title><style>{CSS}</style></head>'
            "<body>" + "\n".join(body) + "</body></html>\n")


def write_report(results: dict, out_dir) -> Path:
    """Write ``out_dir/report.html`` (atomically) and its thumbnails; returns the page's path.

    ``results`` keys (all optional): ``title``, ``subtitle``;
    ``metrics``: {"retrieval": {row name: {"i2t", "t2i", "avg"}}, "tagging": {...}, "note": str};
    ``queries``: [{"kind", "description", "query": {"image" | "text", "tags", "labels"},
                   "results": [{"image" (path or None), "tags", "labels", "score"}]}];
    ``tagging``: {"image", "tags", "true": [label], "predicted": [{"label", "score", "threshold"}]};
    ``curves``: {chart title: [value per epoch] or {"values": [...], "mark": epoch}}, ``curves_note``;
    ``figures``: {caption: PNG path relative to ``out_dir``};
    ``stages``: [{"name", "seconds", "detail"}];
    ``next_command``: str.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = render_report(results, out_dir)
    return atomic_write_text(out_dir / "report.html", page)
