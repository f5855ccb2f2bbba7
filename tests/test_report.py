"""The demo's HTML report: self-contained, relative links that resolve, escaped text, real curves."""
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dagnn_export.demo.report import svg_line_chart, write_report


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href"):
                self.links.append(value)


def _photo(path: Path, color) -> Path:
    Image.fromarray(np.full((300, 200, 3), color, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def results(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    a, b, c = (_photo(src / f"{n}.jpg", col) for n, col in (("a", 10), ("b", 120), ("c", 240)))
    return {
        "title": "demo",
        "metrics": {"retrieval": {"DAGNN (test)": {"i2t": 0.81, "t2i": 0.79, "avg": 0.80},
                                  "random ranking": {"i2t": 0.5, "t2i": 0.5, "avg": 0.5}},
                    "tagging": {"mean_ap": 0.6, "CF1": 0.5, "OF1": 0.55}},
        "queries": [
            {"kind": "Image2Text", "query": {"image": a, "tags": ["sky"], "labels": ["sky"]},
             "results": [{"image": None, "tags": ["<script>alert(1)</script>", "sky"], "labels": ["sky"],
                          "score": 0.9},
                         {"image": None, "tags": ["dog & cat"], "labels": ["animals"], "score": 0.5}]},
            {"kind": "Image→Image", "query": {"image": a, "tags": ["sky"], "labels": ["sky"]},
             "results": [{"image": b, "tags": ["b"], "labels": ["sky"], "score": 0.8},
                         {"image": c, "tags": ["c"], "labels": [], "score": 0.3}]},
            {"kind": "Text2Image", "query": {"text": 'sky, "clouds"', "labels": []},
             "results": [{"image": c, "tags": ["c"], "labels": [], "score": 0.7}]},
        ],
        "tagging": {"image": b, "tags": ["b"], "true": ["sky", "clouds"],
                    "predicted": [{"label": "sky", "score": 0.7, "threshold": 0.2},
                                  {"label": "night", "score": 0.4, "threshold": 0.3}]},
        "curves": {"total loss": [3.0, 2.5, 2.1, 1.9, 1.8], "validation mAP": [0.6, None, 0.7, 0.72, 0.71]},
        "stages": [{"name": "features", "seconds": 12.0, "detail": "1200 photos"},
                   {"name": "training", "seconds": 30.5}],
        "next_command": "dagnn query --bundle out/bundle --text 'sky'",
    }


def test_report_files_exist_and_links_resolve(results, tmp_path):
    out = tmp_path / "out"
    page = write_report(results, out)
    assert page == out / "report.html" and page.is_file()
    parser = _Links()
    text = page.read_text(encoding="utf-8")
    parser.feed(text)
    # query a (one card for its two examples), b, c (twice) and the tagged photo b: three distinct
    # thumbnails, made once each
    assert len(parser.links) == 5
    assert len(set(parser.links)) == 3
    for link in parser.links:
        assert not link.startswith(("/", "http:", "https:", "file:")), link
        target = out / link
        assert target.is_file(), link
        with Image.open(target) as im:
            assert max(im.size) <= 160  # downscaled, not the 300-px original
    assert "<link" not in text and "<script" not in text  # no external asset, no script


def test_report_folder_can_be_moved(results, tmp_path):
    out = tmp_path / "out"
    write_report(results, out)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    out.rename(moved)
    parser = _Links()
    parser.feed((moved / "report.html").read_text(encoding="utf-8"))
    assert parser.links and all((moved / link).is_file() for link in parser.links)


def test_report_escapes_tags(results, tmp_path):
    text = write_report(results, tmp_path / "out").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "dog &amp; cat" in text
    assert "sky, &quot;clouds&quot;" in text


def test_report_shows_metrics_labels_and_timing(results, tmp_path):
    text = write_report(results, tmp_path / "out").read_text(encoding="utf-8")
    assert "0.8100" in text and "0.7900" in text and "random ranking" in text
    assert "night" in text and "not a true label" in text  # wrong prediction flagged
    assert re.search(r'class="lab miss">clouds<', text)          # missed true label listed
    assert "30.5 s" in text and "42.5 s" in text                 # stage and total time


def _polyline_points(svg: str):
    m = re.search(r'<polyline[^>]*points="([^"]*)"', svg)
    assert m, svg
    return [tuple(map(float, p.split(","))) for p in m.group(1).split()]


def test_svg_curve_has_the_points():
    values = [3.0, 2.0, 2.5, 1.0]
    pts = _polyline_points(svg_line_chart("loss", values, width=300, height=200))
    assert len(pts) == 4
    xs, ys = zip(*pts)
    assert list(xs) == sorted(xs) and len(set(xs)) == 4          # one point per epoch, left to right
    # higher value = higher on screen (smaller y); the max and min hit the plot's top and bottom
    assert ys[0] == min(ys) and ys[3] == max(ys)
    assert ys[1] > ys[2]


def test_svg_curve_skips_missing_values_and_handles_flat_and_empty():
    assert len(_polyline_points(svg_line_chart("m", [0.5, None, float("nan"), 0.7]))) == 2
    assert len(_polyline_points(svg_line_chart("flat", [1.0, 1.0, 1.0]))) == 3
    assert "no data" in svg_line_chart("empty", [])


def test_report_curves_inline(results, tmp_path):
    text = write_report(results, tmp_path / "out").read_text(encoding="utf-8")
    assert text.count("<svg") == 2
    svgs = re.findall(r"<svg.*?</svg>", text, flags=re.S)
    assert [len(_polyline_points(s)) for s in svgs] == [5, 4]


def test_svg_marks_the_selected_epoch(results, tmp_path):
    svg = svg_line_chart("val", [0.5, 0.7, 0.6], mark=2)
    pts = _polyline_points(svg)
    m = re.search(r'<circle class="mark" cx="([\d.]+)" cy="([\d.]+)"', svg)
    assert m and (float(m.group(1)), float(m.group(2))) == pts[1]
    assert 'class="mark"' not in svg_line_chart("val", [0.5, 0.7], mark=5)  # no such epoch: no mark
    results["curves"] = {"validation mAP": {"values": [0.5, 0.7, 0.6], "mark": 2}}
    text = write_report(results, tmp_path / "out").read_text(encoding="utf-8")
    assert text.count('class="mark"') == 1


def test_examples_with_the_same_query_share_one_query_card(results, tmp_path):
    text = write_report(results, tmp_path / "out").read_text(encoding="utf-8")
    assert text.count('<div class="card qry">') == 3   # photo a (Image2Text + Image→Image), the text, photo b
    assert text.count('<div class="qrow">') == 3       # one row of results per example
    first, second = text.split('<div class="query">')[1:3]
    assert "<h3>Image2Text" in first and "<h3>Image→Image" in first and "<h3>Text2Image" in second


def test_tagging_metrics_are_explained_beside_their_values(results, tmp_path):
    results["metrics"]["tagging"] = {"mean_ap": 0.6, "CP": 0.41, "CR": 0.52, "CF1": 0.5, "OF1": 0.55}
    text = write_report(results, tmp_path / "out").read_text(encoding="utf-8")
    for name, value, word in (("CP", "0.4100", "precision"), ("CR", "0.5200", "recall"), ("CF1", "0.5000", "F1"),
                              ("OF1", "0.5500", "overall")):
        row = re.search(rf'<tr><th scope="row">{name}</th><td class="num">{value}</td><td class="what">([^<]+)</td>',
                        text)
        assert row and word in row.group(1), name
    assert "mAP (mean average precision)" in text


def test_long_tag_lists_are_cut_with_a_count(results, tmp_path):
    tags = [f"tag{i}" for i in range(10)]
    results["queries"][1]["results"][0]["tags"] = tags
    text = write_report(results, tmp_path / "out").read_text(encoding="utf-8")
    assert f'<div class="tags" title="{", ".join(tags)}">{", ".join(tags[:6])} … +4 more</div>' in text


def test_figures_are_sized_linked_and_timing_folds(results, tmp_path):
    out = tmp_path / "out"
    (out / "report_files").mkdir(parents=True)
    Image.fromarray(np.zeros((100, 400, 3), np.uint8)).save(out / "report_files" / "fig.png")
    Image.fromarray(np.zeros((100, 2000, 3), np.uint8)).save(out / "report_files" / "wide.png")
    results["figures"] = {"a figure": "report_files/fig.png", "a wide one": "report_files/wide.png"}
    text = write_report(results, out).read_text(encoding="utf-8")
    assert ('<figure><a href="report_files/fig.png"><img src="report_files/fig.png" alt="a figure" width="400" '
            'height="100"></a><figcaption>a figure') in text
    assert '<figure class="wide"><a href="report_files/wide.png">' in text  # many labels: a whole row
    assert re.search(r'<details class="sec"><summary><h2>Timing</h2>.*?42\.5 s in all', text)
