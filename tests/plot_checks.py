"""Shared checks of figures.

``assert_figures``: each written PNG exists, decodes, and is not blank (pixel variance).
The rest look at a matplotlib figure as drawn (``drawn`` runs the layout and returns the renderer): what a
reader would see covered, overlapping or too small. ``REPORT_COLUMN_PX`` is the narrowest width at which the
demo report shows a figure at 1280 px (one column of its two-column grid; test_report_browser.py checks that
the report shows them at least that wide), so a text size computed at that width is what a reader gets.
"""
from pathlib import Path

import numpy as np
from PIL import Image

REPORT_COLUMN_PX = 560   # a figure's width on screen in the demo report at 1280 px (at least)
MIN_TEXT_PX = 10         # smallest readable text on screen, in CSS pixels


def assert_figures(folder: Path, names) -> None:
    for name in names:
        path = Path(folder) / name
        assert path.is_file(), f"{name} was not written"
        with Image.open(path) as im:
            assert im.format == "PNG", name
            pixels = np.asarray(im.convert("L"), dtype=np.float64)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, name
        # A blank (or single-colour) canvas has variance 0; a drawn figure has axes, text and data.
        assert pixels.var() > 50, f"{name} looks blank (pixel variance {pixels.var():.1f})"


def drawn(fig):
    """Draw ``fig`` on an Agg canvas (running its layout) and return the renderer, for window extents."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _intersection(a, b) -> tuple[float, float]:
    """Width and height (pixels) of the intersection of two bounding boxes, 0 when apart."""
    return (max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)), max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0)))


def legend_bar_overlaps(fig) -> list[str]:
    """The bars (as "label #i") and the texts (titles, tick labels...) that a legend of ``fig`` covers, and
    legends that leave the canvas."""
    from matplotlib.container import BarContainer
    from matplotlib.text import Text

    renderer = drawn(fig)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    assert legends, "the figure has no legend"
    canvas = fig.bbox
    found = []
    for legend in legends:
        box = legend.get_window_extent(renderer)
        if box.x0 < canvas.x0 - 0.5 or box.y0 < canvas.y0 - 0.5 or box.x1 > canvas.x1 + 0.5 or box.y1 > canvas.y1 + 0.5:
            found.append(f"legend {box.bounds} leaves the canvas {canvas.bounds}")
        for ax in fig.axes:
            for container in ax.containers:
                if not isinstance(container, BarContainer):
                    continue
                for i, bar in enumerate(container.patches):
                    bb = bar.get_window_extent(renderer)
                    if bb.height < 1:  # a bar of height 0 still marks its place on the axis
                        bb = bb.from_extents(bb.x0, bb.y0 - 0.5, bb.x1, bb.y0 + 0.5)
                    w, h = _intersection(box, bb)
                    if w > 0 and h > 0:
                        found.append(f"{container.get_label()} #{i}")
        own = set(map(id, legend.get_texts())) | {id(legend.get_title())}
        for text in figure_texts(fig):
            if id(text) not in own and min(_intersection(box, Text.get_window_extent(text, renderer))) > 0:
                found.append(f"text {text.get_text()!r}")
    return found


def text_overlaps(texts, renderer, tolerance_px: float = 1.0) -> list[tuple[str, str, float, float]]:
    """Pairs of ``texts`` whose drawn boxes overlap by more than ``tolerance_px`` both across and down (the
    text itself: an annotation's line to its point is not part of its box)."""
    from matplotlib.text import Text

    boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in texts if t.get_visible() and t.get_text()]
    found = []
    for i, (name_a, a) in enumerate(boxes):
        for name_b, b in boxes[i + 1:]:
            w, h = _intersection(a, b)
            if w > tolerance_px and h > tolerance_px:
                found.append((name_a, name_b, round(w, 1), round(h, 1)))
    return found


def shown_px(text, fig, shown_width_px: float = REPORT_COLUMN_PX) -> float:
    """Height of ``text``'s font in CSS pixels when the figure's PNG is shown ``shown_width_px`` wide
    (independent of the dpi it is saved at: points per inch of figure width is what scales)."""
    return text.get_fontsize() * shown_width_px / (fig.get_figwidth() * 72)


def figure_texts(fig) -> list:
    """Every visible, non-empty text of ``fig``: titles, labels, tick labels, legends, annotations."""
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


# ------------------------------------------------------------------------ inputs to draw from
DEMO_LABELS = ["animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake",
               "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset",
               "transport", "tree", "water"]
COCO_LABELS = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush"]


def synthetic_inputs(labels, seed=0, items=60):
    """``PlotInputs`` of a made-up evaluation: ``items`` photo–text pairs whose embeddings follow their
    labels, classifiers in a few clusters (t-SNE then packs some labels close together, as real ones do),
    a random label graph and a random baseline."""
    from dagnn_runtime.plots import PlotInputs

    rng = np.random.default_rng(seed)
    n = len(labels)
    centres = rng.standard_normal((max(2, n // 6), 32))
    z = centres[rng.integers(len(centres), size=n)] + 0.6 * rng.standard_normal((n, 32))
    y = (rng.random((items, n)) < min(0.5, 3 / n)).astype(np.float32)
    y[np.arange(items), rng.integers(n, size=items)] = 1
    image_emb = y @ z + 0.8 * rng.standard_normal((items, 32))
    text_emb = y @ z + 0.8 * rng.standard_normal((items, 32))
    edges = (rng.random((n, n)) < 0.12).astype(np.float32)
    return PlotInputs(title=f"run, test split ({items} pairs)", labels=list(labels), image_emb=image_emb,
                      text_emb=text_emb, y=y, image_scores=rng.random((items, n)), thresholds=np.full(n, 0.5),
                      classifiers=z, classifiers_caption="classifiers Z = GAT-GNN(Q, label graph), trained",
                      edges=edges, edges_caption="lines: the GNN's label graph, P(Li|Lj) ≥ 0.3 in either "
                                                 "direction (training labels; the GNN reads it 'given')",
                      baseline=rng.standard_normal((n, 32)),
                      baseline_caption="label word vectors Q, the GNN's input (no GNN). Not the paper's "
                                       "Fig. 5(b), which trains a second model with free classifiers")
