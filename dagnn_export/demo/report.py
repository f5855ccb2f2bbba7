"""The demo's HTML report: one self-contained page plus its thumbnails, movable as a folder.

``write_report(results, out_dir)`` writes ``out_dir/report.html`` and ``out_dir/report_files/*.jpg``.
Every link in the page is relative and there is no external asset (no CDN, no script): loss curves
are inline SVG generated here. ``results`` is a plain dict (see ``write_report``) so that the page
can be built and tested without training anything.
"""
from __future__ import annotations

import hashlib
import html
import math
import os
from pathlib import Path

from PIL import Image

from dagnn_runtime.atomic import atomic_write_text

FILES_DIR = "report_files"
THUMB_SIZE = 160

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1120px; color: #222; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px;
       margin-top: 1.8em; } h3 { margin-bottom: 0.3em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #ddd; padding: 4px 10px;
       text-align: left; } th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.query { display: flex; gap: 16px; align-items: flex-start; margin: 8px 0 4px; }
.results { display: flex; flex-wrap: wrap; gap: 8px; }
.card { width: 136px; border: 1px solid #ddd; border-radius: 6px; padding: 6px; font-size: 0.8em;
        background: #fff; }
.card.hit { border-color: #2a9d3c; box-shadow: 0 0 0 1px #2a9d3c; }
.card.qry { border-color: #3366cc; box-shadow: 0 0 0 1px #3366cc; background: #f5f8ff; }
.card img { width: 136px; height: 136px; object-fit: cover; display: block; margin-bottom: 4px;
            border-radius: 3px; }
.rank { font-weight: 600; } .score { float: right; color: #555; font-variant-numeric: tabular-nums; }
.tags { color: #333; word-wrap: break-word; } .labels { color: #0a5; } .muted { color: #888; }
.card.text .tags { font-weight: 600; margin: 2px 0 4px; }
.lab { display: inline-block; padding: 1px 6px; margin: 1px; border-radius: 8px; background: #eee; }
.lab.ok { background: #d6f5dc; } .lab.miss { background: #fde2e2; } .lab.extra { background: #fff2c6; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.cmd { background: #f4f4f4; padding: 8px 12px; border-radius: 4px; font-family: monospace;
       white-space: pre-wrap; word-break: break-all; }
"""


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


def svg_line_chart(title: str, values, width: int = 340, height: int = 190, color: str = "#3366cc",
                   mark: int | None = None) -> str:
    """A small inline SVG line chart of ``values`` against epochs 1..n (None/NaN points are skipped);
    ``mark`` (an epoch number) is drawn as a dot, e.g. the epoch model selection kept."""
    pts = [(i + 1, float(v)) for i, v in enumerate(values)
           if v is not None and not (isinstance(v, float) and math.isnan(v))]
    left, right, top, bottom = 52, 12, 26, 30
    pw, ph = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff" stroke="#ddd"/>',
             f'<text x="{width / 2:.0f}" y="17" text-anchor="middle" font-size="13" '
             f'font-family="sans-serif">{_e(title)}</text>']
    if pts:
        n = max(len(values), 2)
        ys = [y for _, y in pts]
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        sx = lambda x: left + (x - 1) / (n - 1) * pw  # noqa: E731
        sy = lambda y: top + (hi - y) / (hi - lo) * ph  # noqa: E731
        parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>')
        parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#999"/>')
        for y in (lo, hi):
            parts.append(f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" font-size="10" '
                         f'font-family="sans-serif">{_e(f"{y:.3g}")}</text>')
        parts.append(f'<text x="{left}" y="{height - 10}" font-size="10" font-family="sans-serif">1</text>')
        parts.append(f'<text x="{left + pw}" y="{height - 10}" text-anchor="end" font-size="10" '
                     f'font-family="sans-serif">epoch {len(values)}</text>')
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>')
        if len(pts) == 1:
            x, y = pts[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
        marked = [(x, y) for x, y in pts if x == mark]
        if marked:
            x, y = marked[0]
            parts.append(f'<circle class="mark" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4.5" fill="#fff" '
                         f'stroke="#222" stroke-width="2"><title>epoch {x}: {y:.4g}</title></circle>')
    else:
        parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" font-size="12" '
                     f'fill="#888" font-family="sans-serif">no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def _labels_html(labels, reference=None) -> str:
    """Label chips; with ``reference`` (the query's labels), shared labels are highlighted."""
    if not labels:
        return '<span class="muted">no label</span>'
    ref = set(reference or ())
    return " ".join(f'<span class="lab{" ok" if name in ref else ""}">{_e(name)}</span>' for name in labels)


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
    tags = ", ".join(item.get("tags", ())) or "(no tag)"
    return (f'<div class="{cls}">{head}{pic}<div class="tags">{_e(tags)}</div>'
            f'<div>{_labels_html(item.get("labels", ()), query_labels)}</div></div>')


def _query_section(thumbs: _Thumbs, q: dict) -> str:
    query = q["query"]
    out = [f'<h3>{_e(q["kind"])}</h3>']
    if q.get("description"):
        out.append(f'<p class="sub">{_e(q["description"])}</p>')
    qlabels = query.get("labels") or []
    if query.get("image") is not None:
        query_html = _card(thumbs, query, is_query=True)
    else:
        query_html = (f'<div class="card qry"><div><span class="rank">query text</span></div>'
                      f'<div class="tags"><b>{_e(query.get("text", ""))}</b></div>'
                      f'<div>{_labels_html(qlabels)}</div></div>')
    cards = "".join(_card(thumbs, r, rank=i + 1, query_labels=qlabels) for i, r in enumerate(q["results"]))
    out.append(f'<div class="query">{query_html}<div class="results">{cards}</div></div>')
    if qlabels:
        hits = sum(bool(set(r.get("labels", ())) & set(qlabels)) for r in q["results"])
        out.append(f'<p class="muted">{hits} of {len(q["results"])} results share a label with the query '
                   f'(green frame).</p>')
    return "".join(out)


def _tagging_section(thumbs: _Thumbs, t: dict) -> str:
    true, pred = set(t.get("true", ())), [p["label"] for p in t.get("predicted", ())]
    rows = []
    for p in t.get("predicted", ()):
        mark = "correct" if p["label"] in true else "not in the true labels"
        rows.append(f'<tr><td><span class="lab {"ok" if p["label"] in true else "extra"}">{_e(p["label"])}'
                    f'</span></td><td class="num">{_fmt(float(p["score"]), 3)}</td>'
                    f'<td class="num">{_fmt(p.get("threshold"), 3)}</td><td>{mark}</td></tr>')
    missed = [name for name in t.get("true", ()) if name not in pred]
    photo = _card(thumbs, {"image": t["image"], "tags": t.get("tags", ()), "labels": t.get("true", ())},
                  is_query=True)
    table = ('<table><tr><th>predicted label</th><th>score</th><th>threshold</th><th></th></tr>'
             + ("".join(rows) or '<tr><td colspan="4" class="muted">no label above its threshold</td></tr>')
             + "</table>")
    missed_html = ("<p>True labels not predicted: " + " ".join(
        f'<span class="lab miss">{_e(m)}</span>' for m in missed) + "</p>") if missed else ""
    true_html = f'<p>True labels: {_labels_html(t.get("true", ()))}</p>'
    return (f'<div class="query">{photo}<div>{true_html}{table}{missed_html}</div></div>')


def _metrics_section(metrics: dict) -> str:
    rows = []
    for name, m in metrics.get("retrieval", {}).items():
        rows.append(f'<tr><td>{_e(name)}</td><td class="num">{_fmt(m.get("i2t"))}</td>'
                    f'<td class="num">{_fmt(m.get("t2i"))}</td><td class="num">{_fmt(m.get("avg"))}</td></tr>')
    out = ['<table><tr><th></th><th>Image2Text mAP</th><th>Text2Image mAP</th><th>average</th></tr>'
           + "".join(rows) + "</table>"]
    tagging = metrics.get("tagging")
    if tagging:
        names = {"mean_ap": "tagging mean AP", "CP": "CP", "CR": "CR", "CF1": "CF1", "OF1": "OF1"}
        keys = [k for k in names if k in tagging]
        out.append("<table><tr>" + "".join(f"<th>{_e(names[k])}</th>" for k in keys) + "</tr><tr>"
                   + "".join(f'<td class="num">{_fmt(tagging[k])}</td>' for k in keys) + "</tr></table>")
    if metrics.get("note"):
        out.append(f'<p class="muted">{_e(metrics["note"])}</p>')
    return "".join(out)


def _timing_section(stages: list[dict]) -> str:
    cpu = all("cpu_seconds" in s for s in stages)
    rows = "".join(f'<tr><td>{_e(s["name"])}</td><td class="num">{s["seconds"]:.1f} s</td>'
                   + (f'<td class="num">{s["cpu_seconds"]:.1f} s</td>' if cpu else "")
                   + f'<td>{_e(s.get("detail", ""))}</td></tr>' for s in stages)
    total = sum(s["seconds"] for s in stages)
    total_cpu = f'<th class="num">{sum(s["cpu_seconds"] for s in stages):.1f} s</th>' if cpu else ""
    return ('<table><tr><th>stage</th><th>wall time</th>' + ("<th>CPU time</th>" if cpu else "")
            + '<th>what it did</th></tr>' + rows
            + f'<tr><th>total</th><th class="num">{total:.1f} s</th>{total_cpu}<th></th></tr></table>')


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
        body.extend(_query_section(thumbs, q) for q in results["queries"])
    if results.get("tagging"):
        body.append("<h2>Tagging a held-out photo</h2>" + _tagging_section(thumbs, results["tagging"]))
    curves = results.get("curves") or {}
    if curves:
        charts = []
        for name, curve in curves.items():
            values, mark = (curve["values"], curve.get("mark")) if isinstance(curve, dict) else (curve, None)
            charts.append(svg_line_chart(name, values, mark=mark,
                                         color="#cc5533" if "loss" in name.lower() else "#3366cc"))
        note = results.get("curves_note")
        body.append("<h2>Training curves</h2>" + (f'<p class="sub">{_e(note)}</p>' if note else "")
                    + '<div class="charts">' + "".join(charts) + "</div>")
    if results.get("figures"):
        body.append("<h2>Figures</h2>" + "".join(
            f'<figure><img src="{_e(src)}" alt="{_e(caption)}" style="max-width:100%">'
            f"<figcaption>{_e(caption)}</figcaption></figure>" for caption, src in results["figures"].items()))
    if results.get("stages"):
        body.append("<h2>Timing</h2>" + _timing_section(results["stages"]))
    if results.get("next_command"):
        body.append('<h2>Try it yourself</h2><div class="cmd">' + _e(results["next_command"]) + "</div>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>{_e(results.get("title", "dagnn demo"))}</title><style>{_CSS}</style></head>'
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
