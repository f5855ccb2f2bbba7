"""The fixed parts of the demo report (``report``): its style sheet, the words that explain its metrics, and
the small inline SVG line chart of a training curve."""
from __future__ import annotations

import html
import math

CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 16px auto;
       max-width: 1240px; color: #222; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 1.5em; margin: 0 0 0.2em; }
h2 { font-size: 1.3em; border-bottom: 1px solid #ddd; padding-bottom: 3px; margin: 1.2em 0 0.5em; }
h3 { font-size: 1.05em; margin: 0.2em 0 0.4em; }
.sub, .desc { color: #555; margin-top: 0; } .desc { font-weight: normal; font-size: 0.9em; }
.muted { color: #666; } .note { color: #555; font-size: 0.9em; margin: 0.4em 0; }
a { color: #2857b8; }
table { border-collapse: collapse; margin: 4px 0 8px; } th, td { border: 1px solid #ddd; padding: 3px 8px;
       text-align: left; vertical-align: top; } th { background: #f4f4f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; } td.num { white-space: nowrap; }
td.what { color: #444; font-size: 0.9em; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 460px), 1fr));
         gap: 8px 32px; align-items: start; }
.query { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: flex-start; margin: 6px 0 14px; }
.qrows { flex: 1 1 300px; min-width: 0; } .qrow + .qrow { margin-top: 10px; }
.hits { color: #666; font-size: 0.9em; margin: 4px 0 0; }
.results { display: grid; grid-template-columns: repeat(auto-fit, minmax(128px, 1fr)); gap: 6px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 5px; font-size: 0.8em;
        background: #fff; overflow-wrap: anywhere; }
.card.hit { border-color: #2a9d3c; box-shadow: 0 0 0 1px #2a9d3c; }
.card.qry { border-color: #3366cc; box-shadow: 0 0 0 1px #3366cc; background: #f5f8ff; width: 150px; }
.card img { width: 100%; height: 112px; object-fit: cover; display: block; margin-bottom: 3px;
            border-radius: 3px; }
.rank { font-weight: 600; } .score { float: right; color: #555; font-variant-numeric: tabular-nums; }
.tags { color: #333; } .card.text .tags { font-weight: 600; margin: 2px 0 3px; }
.lab { display: inline-block; padding: 0 6px; margin: 1px; border-radius: 8px; background: #eee; }
.lab.ok { background: #d6f5dc; } .lab.miss { background: #fde2e2; } .lab.extra { background: #fff2c6; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 260px), 1fr)); gap: 8px; }
.charts svg { width: 100%; height: auto; display: block; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 520px), 1fr));
        gap: 12px 24px; align-items: start; }
figure { margin: 0; min-width: 0; } figure.wide { grid-column: 1 / -1; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #eee; }
figcaption { font-size: 0.95em; color: #333; margin-top: 4px; }
details.sec > summary { cursor: pointer; list-style: none; display: flex; align-items: baseline; gap: 10px;
        flex-wrap: wrap; border-bottom: 1px solid #ddd; margin: 25px 0 10px; padding-bottom: 3px; }
section { min-width: 0; }
details.sec > summary::-webkit-details-marker { display: none; }
details.sec > summary::before { content: "▸"; color: #666; } details.sec[open] > summary::before { content: "▾"; }
details.sec > summary h2 { border: 0; margin: 0; padding: 0; }
.cmd { background: #f4f4f4; padding: 8px 12px; border-radius: 4px; font-family: monospace;
       white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
@media (max-width: 640px) {
  body { padding: 0 10px; margin-top: 10px; } th, td { padding: 3px 5px; }
  .results { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); width: 100%; }
  .card.qry { width: 100%; }
  .card.qry img { width: 50%; height: auto; aspect-ratio: 4 / 3; float: left; margin: 0 8px 4px 0; }
  .card.qry::after { content: ""; display: block; clear: both; }
}
"""
# What the tagging metrics mean, in the words the page shows beside their values (runtime.metrics computes
# them at each label's calibrated threshold).
TAGGING_TERMS = {
    "mean_ap": ("mean AP", "for each label, how well the photos that have it are ranked above the others "
                           "(average precision), averaged over labels"),
    "CP": ("CP", "per-label precision: of the photos given a label, the share that truly have it, averaged "
                 "over labels"),
    "CR": ("CR", "per-label recall: of the photos that truly have a label, the share given it, averaged over "
                 "labels"),
    "CF1": ("CF1", "per-label F1: 2·CP·CR / (CP + CR), one number that balances CP and CR"),
    "OF1": ("OF1", "overall F1: precision and recall of all photo–label decisions pooled, so frequent labels "
                   "weigh more"),
}
MAP_NOTE = ("mAP (mean average precision): for each query, how high the relevant items rank (1 = all of them "
            "first), averaged over queries.")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def svg_line_chart(title: str, values, width: int = 340, height: int = 160, color: str = "#3366cc",
                   mark: int | None = None) -> str:
    """A small inline SVG line chart of ``values`` against epochs 1..n (None/NaN points are skipped);
    ``mark`` (an epoch number) is drawn as a dot, e.g. the epoch model selection kept."""
    pts = [(i + 1, float(v)) for i, v in enumerate(values)
           if v is not None and not (isinstance(v, float) and math.isnan(v))]
    left, right, top, bottom = 52, 12, 26, 30
    pw, ph = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#fff" stroke="#ddd"/>',
             f'<text x="{width / 2:.0f}" y="17" text-anchor="middle" font-size="14" '
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
            parts.append(f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" font-size="12" '
                         f'font-family="sans-serif">{_e(f"{y:.3g}")}</text>')
        parts.append(f'<text x="{left}" y="{height - 10}" font-size="12" font-family="sans-serif">1</text>')
        parts.append(f'<text x="{left + pw}" y="{height - 10}" text-anchor="end" font-size="12" '
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
