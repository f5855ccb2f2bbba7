"""`dagnn eval --bundle B --data D --plots DIR` on a small real bundle (no torch needed)."""
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib", reason="needs the [plots] extra (matplotlib)")
pytest.importorskip("sklearn", reason="needs the [plots] extra (scikit-learn)")

from typer.testing import CliRunner  # noqa: E402

from bundle_factory import bundle_dir, data_dir, model  # noqa: E402,F401
from dagnn_cli.main import app  # noqa: E402
from plot_checks import assert_figures  # noqa: E402

BUNDLE_FIGURES = ["per_label_ap.png", "pr_curve.png", "map_at_k.png", "tsne_classifiers.png",
                  "tagging_confusion.png"]


def test_eval_bundle_writes_every_figure(bundle_dir, data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "figs"
    result = CliRunner().invoke(app, ["eval", "--bundle", str(bundle_dir), "--data", str(data_dir),
                                      "--plots", str(out), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)["plots"]
    assert sorted(listed) == ["map_at_k", "per_label_ap", "pr_curve", "tagging_confusion", "tsne"]
    assert_figures(out, BUNDLE_FIGURES)
    assert not (out / "training.png").exists()  # a bundle has no training history


def test_blank_image_fails_the_check(tmp_path):
    """The check itself can fail: a single-colour PNG is refused."""
    Image.fromarray(np.full((200, 200), 255, np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(AssertionError, match="blank"):
        assert_figures(tmp_path, ["blank.png"])


def test_plots_into_a_file_path_is_a_clear_error(bundle_dir, data_dir, tmp_path):  # noqa: F811
    target = tmp_path / "a-file"
    target.write_text("x")
    result = CliRunner().invoke(app, ["eval", "--bundle", str(bundle_dir), "--data", str(data_dir),
                                      "--plots", str(target), "--quiet"])
    assert result.exit_code == 1
    assert "--plots" in result.output and "a-file" in result.output


# ------------------------------------------------------------------ what a reader sees in the two report figures
from plot_checks import COCO_LABELS, DEMO_LABELS, synthetic_inputs as _inputs  # noqa: E402


def _drawn_figure(monkeypatch, tmp_path, draw):
    """Run ``draw(plots, path)`` and return the figure it saved (captured at save_png)."""
    from dagnn_runtime import plots

    saved = []
    original = plots.save_png

    def capture(fig, path):
        saved.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "save_png", capture)
    path = draw(plots, tmp_path / "figure.png")
    assert path is not None and path.is_file() and len(saved) == 1
    return saved[0]


@pytest.mark.parametrize("labels", [DEMO_LABELS, DEMO_LABELS[:5], COCO_LABELS], ids=["24", "5", "80"])
def test_per_label_legend_covers_no_bar(labels, monkeypatch, tmp_path):
    """The legend sits where no bar is, whatever the number of labels and however high the last bars."""
    from plot_checks import legend_bar_overlaps

    n = len(labels)
    rng = np.random.default_rng(1)
    curves = {name: {"per_label": np.clip(rng.uniform(0.5, 1.0, n), 0, 1)} for name in ("i2t", "t2i")}
    curves["i2t"]["per_label"][-7:] = 0.97  # tall bars where a corner legend would sit
    curves["t2i"]["per_label"][:3] = 0.95
    curves["t2i"]["per_label"][1] = np.nan  # a label no query carries
    fig = _drawn_figure(monkeypatch, tmp_path,
                        lambda plots, path: plots.per_label_ap(_inputs(labels), curves, path))
    assert legend_bar_overlaps(fig) == []


def test_per_label_text_is_readable_in_the_report(monkeypatch, tmp_path):
    from plot_checks import MIN_TEXT_PX, figure_texts, shown_px

    curves = {name: {"per_label": np.linspace(0.3, 0.9, 24)} for name in ("i2t", "t2i")}
    fig = _drawn_figure(monkeypatch, tmp_path,
                        lambda plots, path: plots.per_label_ap(_inputs(DEMO_LABELS), curves, path))
    small = {t.get_text(): round(shown_px(t, fig), 1) for t in figure_texts(fig) if shown_px(t, fig) < MIN_TEXT_PX}
    assert not small, f"text under {MIN_TEXT_PX} px where the report shows the figure: {small}"


@pytest.mark.parametrize("labels", [DEMO_LABELS, COCO_LABELS], ids=["24", "80"])
def test_tsne_labels_do_not_overlap(labels, monkeypatch, tmp_path):
    """Label boxes of the t-SNE never overlap each other (1 px tolerance), stay on the canvas, and each
    label stays near its own point."""
    from plot_checks import drawn, text_overlaps

    inputs = _inputs(labels)
    fig = _drawn_figure(monkeypatch, tmp_path, lambda plots, path: plots.tsne(inputs, path))
    renderer = drawn(fig)
    panels = [ax for ax in fig.axes if ax.texts]
    assert len(panels) == 2
    for ax in panels:
        names = [t for t in ax.texts if t.get_text() in set(labels)]
        assert sorted(t.get_text() for t in names) == sorted(labels)  # every label is shown
        assert text_overlaps(names, renderer) == []
        for t in names:
            box = t.get_window_extent(renderer)
            assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 <= box.y1 <= fig.bbox.y1


def test_tsne_text_is_readable_in_the_report(monkeypatch, tmp_path):
    """At the width the report shows it, every text of the t-SNE figure (point labels, titles, the caption
    line) is at least MIN_TEXT_PX tall."""
    from plot_checks import MIN_TEXT_PX, figure_texts, shown_px

    fig = _drawn_figure(monkeypatch, tmp_path, lambda plots, path: plots.tsne(_inputs(DEMO_LABELS), path))
    small = {t.get_text()[:40]: round(shown_px(t, fig), 1) for t in figure_texts(fig)
             if shown_px(t, fig) < MIN_TEXT_PX}
    assert not small, f"text under {MIN_TEXT_PX} px where the report shows the figure: {small}"


def test_the_figure_checks_can_fail():
    """The checks themselves see a legend on a bar, overlapping texts and small text."""
    from matplotlib.figure import Figure

    from plot_checks import drawn, legend_bar_overlaps, shown_px, text_overlaps

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.bar([0, 1, 2], [0.9, 0.9, 0.9], label="bars")
    ax.set_ylim(0, 1)
    ax.legend(loc="center")
    assert legend_bar_overlaps(fig)
    a, b = ax.text(0.5, 0.5, "label one"), ax.text(0.52, 0.5, "label two")
    assert text_overlaps([a, b], drawn(fig))
    assert shown_px(a, fig, 300) < 10  # 10 pt in a 6-inch figure shown 300 px wide
