"""What a person sees in the demo report, checked in headless Chromium (Playwright) at 1280 and 390 px wide.

Two real reports: the tiny demo's (tests/test_demo.py's plan: every stage, real figures; needs torch) and one
written by ``write_report`` from made-up results with long tag lists and figures drawn by ``plots`` (no torch).
Checks: every image decodes; no text is clipped and the page never scrolls sideways; captions and every other
HTML text are at least 12 px; CP, CR, CF1 and OF1 are each explained in words on the page; the figures stand side
by side at 1280 px, at least ``REPORT_COLUMN_PX`` wide (the width test_plots.py checks their text at), and one
above the other on a phone; and the page at 1280 px stays under ``MAX_HEIGHT_1280``.

Why 3,000 px: the report holds a header, two metric tables, three example queries with 6 results each, a tagged
photo, six training curves, two figures, the timings and the commands: at 1280 px this fits in about three
laptop screens (~950 px each) when the figures share a row and details fold away. It was 4,722 px before.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dagnn_export.demo.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
WIDE, PHONE = 1280, 390
MAX_HEIGHT_1280 = 3000
MIN_HTML_TEXT_PX = 12

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the [dev] extra)")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")

# ------------------------------------------------------------------------------------------ checks (in page JS)
BROKEN_IMAGES = """() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
                                               .map(i => i.getAttribute('src'))"""

# Any element (outside SVG drawings) whose content is wider than its box clips or spills its text.
CLIPPED = """() => {
  const out = [];
  if (document.documentElement.scrollWidth > window.innerWidth + 1)
    out.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${window.innerWidth}`);
  for (const el of document.querySelectorAll('body, body *')) {
    if (el.closest('svg')) continue;
    const style = getComputedStyle(el);
    if (style.display === 'inline' || style.display === 'none' || el.getClientRects().length === 0) continue;
    if (el.scrollWidth > el.clientWidth + 1)
      out.push(`${el.tagName.toLowerCase()}.${el.className} "${el.textContent.trim().slice(0, 40)}" ` +
               `${el.scrollWidth} > ${el.clientWidth}`);
  }
  return out;
}"""

# Visible HTML text (not SVG) smaller than the minimum, and every figure caption's size.
SMALL_TEXT = """(minPx) => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || seen.has(el) || el.closest('svg') || el.getClientRects().length === 0) continue;
    seen.add(el);
    const px = parseFloat(getComputedStyle(el).fontSize);
    if (px < minPx) out.push(`${el.tagName.toLowerCase()} "${n.textContent.trim().slice(0, 30)}" ${px}px`);
  }
  return out;
}"""
CAPTION_SIZES = """() => [...document.querySelectorAll('figcaption')].map(c => parseFloat(getComputedStyle(c).fontSize))"""

# For each term: the visible words that explain it, from a <dt>/<dd> pair or from the table row it heads.
EXPLANATIONS = """(terms) => {
  const visible = el => el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const out = {};
  for (const term of terms) {
    out[term] = [];
    for (const el of document.querySelectorAll('dt, th, td')) {
      if (el.textContent.trim() !== term || !visible(el)) continue;
      if (el.tagName === 'DT') {
        const dd = el.nextElementSibling;
        if (dd && dd.tagName === 'DD' && visible(dd)) out[term].push(dd.textContent.trim());
      } else {
        for (const cell of el.parentElement.children)
          if (cell !== el && visible(cell)) out[term].push(cell.textContent.trim());
      }
    }
  }
  return out;
}"""
TERMS = {"CP": r"precision", "CR": r"recall", "CF1": r"F1|harmonic", "OF1": r"F1|overall"}

FIGURE_BOXES = """() => [...document.querySelectorAll('figure img')].map(i => {
  const r = i.getBoundingClientRect();
  return {src: i.getAttribute('src'), left: r.left, top: r.top, width: r.width, natural: i.naturalWidth};
})"""


def explained(page) -> dict:
    """{term: True when a visible explanation of at least 4 words names what it measures}."""
    found = page.evaluate(EXPLANATIONS, list(TERMS))
    return {term: any(len(text.split()) >= 4 and re.search(pattern, text, re.I) for text in found[term])
            for term, pattern in TERMS.items()}


def page_height(page) -> int:
    return page.evaluate("document.documentElement.scrollHeight")


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def _open(browser, path: Path, width: int):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page


def _demo_report(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="needs the [train] extra (torch)")
    pytest.importorskip("matplotlib", reason="needs the [plots] extra (matplotlib)")
    pytest.importorskip("sklearn", reason="needs the [plots] extra (scikit-learn)")
    from rich.console import Console

    from dagnn_export.demo import Plan, run_demo
    from test_demo import TINY_MODEL

    out = tmp_path_factory.mktemp("demo-report") / "out"
    plan = Plan("test", photos=120, text_only=100, train=TINY_MODEL, min_margin=None, backbone="tiny")
    run_demo(out, console=Console(record=True, width=200, force_terminal=False), plan=plan)
    return out / "report.html"


def _photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    t = np.linspace(0, 1, 240)[:, None, None]
    Image.fromarray((a * (1 - t) + b * t).astype(np.uint8).repeat(320, axis=1)).save(path)
    return path


def _made_up_report(tmp_path_factory) -> Path:
    """A report of made-up results that strain the layout: long tag lists, many labels per photo, long names."""
    pytest.importorskip("matplotlib", reason="needs the [plots] extra (matplotlib)")
    pytest.importorskip("sklearn", reason="needs the [plots] extra (scikit-learn)")
    from dagnn_runtime.plots import write_plots
    from plot_checks import DEMO_LABELS, synthetic_inputs

    root = tmp_path_factory.mktemp("made-up-report")
    photos = [_photo(root / f"im{i}.jpg", i) for i in range(8)]
    out = root / "out"
    drawn = write_plots(synthetic_inputs(DEMO_LABELS), out / "report_files", only=("per_label_ap", "tsne"))
    long_tags = ["crossprocessed", "crossprocessing", "xpro", "mediumformat", "square", "kodak", "lomography",
                 "explore", "explored", "supercalifragilisticexpialidocious", "nightshot", "cityscape"]
    many = DEMO_LABELS[:10]

    def result(i, image=True):
        return {"image": photos[i % 8] if image else None, "tags": long_tags[: 2 + i * 2], "labels": many[: i + 2],
                "score": 0.9 - i / 20}

    query = {"image": photos[0], "tags": long_tags, "labels": many}
    results = {
        "title": "dagnn demo — MIRFlickr subset (made-up run)",
        "subtitle": "120 photo pairs (24 held out for test), tiny features, DAGNN trained 1 epochs.",
        "metrics": {"retrieval": {"DAGNN bundle (onnxruntime)": {"i2t": 0.6717, "t2i": 0.6546, "avg": 0.6632},
                                  "DAGNN run (torch)": {"i2t": 0.6717, "t2i": 0.6546, "avg": 0.6632},
                                  "random ranking": {"i2t": 0.6975, "t2i": 0.6931, "avg": 0.6953}},
                    "tagging": {"mean_ap": 0.3516, "CP": 0.2147, "CR": 0.3189, "CF1": 0.2567, "OF1": 0.4203},
                    "note": "Test split: 24 photo–text pairs, each query ranked against all of them; an item is "
                            "relevant when it shares a label with the query. Tagging metrics on the test photos "
                            "at thresholds calibrated on the validation split."},
        "queries": [
            {"kind": "Image2Text", "description": "held-out photo im8166.jpg → the closest tag texts",
             "query": query, "results": [result(i, image=False) for i in range(6)]},
            {"kind": "Image→Image", "description": "held-out photo im8166.jpg → the closest photos",
             "query": query, "results": [result(i) for i in range(6)]},
            {"kind": "Text2Image", "description": "text 'sky, clouds, sunset' → the closest photos",
             "query": {"text": "sky, clouds, sunset", "labels": ["sky", "clouds", "sunset"]},
             "results": [result(i + 1) for i in range(6)]},
        ],
        "tagging": {"image": photos[5], "tags": ["peace", "amor", "sunlight", "dof", "50mm"],
                    "true": ["female", "flower", "people", "plant_life", "portrait"],
                    "predicted": [{"label": "portrait", "score": 0.033, "threshold": 0.018},
                                  {"label": "male", "score": 0.015, "threshold": 0.005},
                                  {"label": "structures", "score": 0.006, "threshold": -0.0}]},
        "curves": {name: {"values": [3.0, 2.5, 2.1, 1.9, 1.8], "mark": 4} for name in
                   ("total loss", "L_cla loss (label classification)", "L_mdi loss (multi-hop distance)",
                    "L_adv loss (adversarial)", "validation mAP (avg of I2T, T2I)",
                    "text MLP pretraining: validation BCE loss")},
        "curves_note": "Per epoch. Dots mark the epoch kept.",
        "figures": {"Per-label retrieval mAP on the test split (mean AP of the queries with the label)":
                    f"report_files/{Path(drawn['per_label_ap']).name}",
                    "t-SNE of the classifiers Z (left) and of the GNN's input label vectors (right), label "
                    "co-occurrence graph drawn over them": f"report_files/{Path(drawn['tsne']).name}"},
        "stages": [{"name": n, "seconds": s, "cpu_seconds": s / 2, "detail": d} for n, s, d in (
            ("data", 0.1, "120 photo pairs + 100 text-only pairs, 24 labels, 1386 tags (test run)"),
            ("features", 1.7, "120 photos → features-tiny.npz"), ("training", 2.9, "1 epochs"),
            ("export", 0.6, "bundle/ (1.1 MB)"), ("indexes", 2.0, "120 photos, 220 tag texts → index/image, /text"),
            ("queries", 0.1, "3 retrieval examples, 1 tagged photo"), ("metrics", 0.0, "test mAP 0.6632"))],
        "next_command": "# from the folder `dagnn demo` ran in\n.venv/bin/dagnn query --bundle "
                        "/tmp/a/very/long/path/that/goes/on/and/on/bundle --index /tmp/a/very/long/path/index "
                        "--image /tmp/a/very/long/path/queries/im8166.jpg --k 5",
    }
    return write_report(results, out)


@pytest.fixture(scope="module", params=["demo", "made-up"])
def report(request, tmp_path_factory) -> Path:
    return (_demo_report if request.param == "demo" else _made_up_report)(tmp_path_factory)


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("width", [WIDE, PHONE])
def test_images_decode_and_no_text_is_clipped(report, browser, width):
    page = _open(browser, report, width)
    assert page.evaluate(BROKEN_IMAGES) == []
    assert page.evaluate(CLIPPED) == []
    assert page.evaluate(SMALL_TEXT, MIN_HTML_TEXT_PX) == []
    sizes = page.evaluate(CAPTION_SIZES)
    assert sizes and min(sizes) >= 12, sizes


def test_page_is_compact_at_1280(report, browser):
    height = page_height(_open(browser, report, WIDE))
    assert height < MAX_HEIGHT_1280, f"{height} px tall at {WIDE} px wide"


def test_tagging_metrics_are_explained(report, browser):
    for width in (WIDE, PHONE):
        assert explained(_open(browser, report, width)) == {term: True for term in TERMS}


def test_figures_side_by_side_when_wide_stacked_on_a_phone(report, browser):
    from plot_checks import REPORT_COLUMN_PX

    wide = _open(browser, report, WIDE).evaluate(FIGURE_BOXES)
    assert len(wide) == 2
    for fig in wide:  # shown at least as wide as test_plots.py checks their text at, never upscaled
        assert REPORT_COLUMN_PX <= fig["width"] <= fig["natural"] + 1, fig
    a, b = wide
    assert abs(a["top"] - b["top"]) < 2 and b["left"] >= a["left"] + a["width"], wide
    phone = _open(browser, report, PHONE).evaluate(FIGURE_BOXES)
    a, b = phone
    assert b["top"] > a["top"] + 100 and abs(a["left"] - b["left"]) < 2, phone


def test_the_page_checks_can_fail(browser, tmp_path):
    """On a page with a broken image, a clipped cell, a 10 px caption, a long table and unexplained terms,
    every check above reports the fault."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body style="margin:0"><img src="missing.png" alt="x">'
        '<table><tr><td style="max-width:40px;overflow:hidden;white-space:nowrap">a very long cell text</td>'
        '</tr></table><figure><figcaption style="font-size:10px">tiny caption</figcaption></figure>'
        '<table><tr><th>CP</th><th>CR</th><th>CF1</th><th>OF1</th></tr><tr><td>0.2</td><td>0.3</td>'
        '<td>0.2</td><td>0.4</td></tr></table><div style="height:5000px;width:2000px"></div></body></html>')
    view = _open(browser, page, WIDE)
    assert view.evaluate(BROKEN_IMAGES) == ["missing.png"]
    clipped = view.evaluate(CLIPPED)
    assert any(c.startswith("page scrolls sideways") for c in clipped)
    assert any('"a very long cell text"' in c for c in clipped)
    assert any("tiny caption" in s for s in view.evaluate(SMALL_TEXT, MIN_HTML_TEXT_PX))
    assert view.evaluate(CAPTION_SIZES) == [10]
    assert page_height(view) > MAX_HEIGHT_1280
    assert explained(view) == {term: False for term in TERMS}
