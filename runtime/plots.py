"""Evaluation figures as PNG files (``dagnn eval --plots DIR``), drawn with matplotlib's Agg canvas.

matplotlib and scikit-learn (t-SNE) come with the ``[plots]`` extra and are imported only when a figure is
drawn, so the base install stays small. Inputs are plain arrays (``PlotInputs``): a bundle evaluation and a
training run's evaluation fill them the same way; the numbers come from ``curves`` and ``metrics``.
"""
from __future__ import annotations

import logging
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .curves import cross_modal_curves
from .errors import DagnnError, InputError, install_hint, shorten
from .metrics import confusion_counts
from .plot_labels import place_labels

logger = logging.getLogger(__name__)

COLORS = {"i2t": "#3366cc", "t2i": "#dc7633"}
NAMES = {"i2t": "image → text", "t2i": "text → image"}
DPI = 110
# The per-label and t-SNE figures are also shown in the demo report, two side by side at about 560 px wide
# each: their widths and font sizes keep every text at 10 px or more there (11-12 pt in an 8-9 inch figure).
TEXT_PT = 11
LABEL_PT = 12


@dataclass
class PlotInputs:
    title: str                      # what was evaluated, e.g. "RUN, test split (2000 pairs)"
    labels: list
    image_emb: np.ndarray           # the split's image and text embeddings and labels
    text_emb: np.ndarray
    y: np.ndarray
    image_scores: np.ndarray        # label scores of the split's images, and the tagging thresholds
    thresholds: np.ndarray
    classifiers: np.ndarray         # Z, one row per label
    classifiers_caption: str
    edges: np.ndarray | None = None     # B of the label graph (drawn as undirected lines), or None
    edges_caption: str = ""
    baseline: np.ndarray | None = None  # the vectors shown "without the GNN" beside Z, or None
    baseline_caption: str = ""
    history: dict | None = None         # a run's history.json


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise DagnnError(f"figures need matplotlib, from the [plots] extra: {install_hint('plots')}") from None
    return Figure, FigureCanvasAgg


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``DPI``; a figure without a layout engine is laid out tightly first."""
    _, canvas = _matplotlib()
    if not isinstance(fig.canvas, canvas):
        canvas(fig)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def new_figure(width: float, height: float, ncols: int = 1, layout: str | None = None):
    """A figure of ``ncols`` axes side by side (inches; ``layout`` e.g. "constrained")."""
    figure, _ = _matplotlib()
    fig = figure(figsize=(width, height), dpi=DPI, layout=layout)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (average glyph ~0.55 em)."""
    return textwrap.fill(text, max(20, int(width_in * 72 / (0.55 * fontsize))))


def per_label_ap(inputs: PlotInputs, curves: dict, path: Path) -> Path:
    """Bars of the per-label mAP, image → text and text → image; the legend sits above the axes, under the
    title (outside them: it covers no bar whatever the number of labels); a label no query carries says so."""
    n = len(inputs.labels)
    fig, (ax,) = new_figure(max(8.0, 0.3 * n + 1.2), 4.4, layout="constrained")
    x = np.arange(n)
    missing = np.ones(n, dtype=bool)
    for offset, name in ((-0.2, "i2t"), (0.2, "t2i")):
        vals = np.asarray(curves[name]["per_label"], dtype=np.float64)
        missing &= ~np.isfinite(vals)
        overall = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        ax.bar(x + offset, np.nan_to_num(vals), width=0.4, color=COLORS[name],
               label=f"{NAMES[name]} (mean over labels {overall:.3f})")
    for i in np.nonzero(missing)[0]:
        ax.text(i, 0.02, "no query", rotation=90, ha="center", va="bottom", fontsize=TEXT_PT, color="#777777")
    ax.set_xticks(x, inputs.labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=TEXT_PT)
    ax.tick_params(axis="y", labelsize=TEXT_PT)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("mAP of the queries\nwith this label", fontsize=TEXT_PT)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, fontsize=TEXT_PT, frameon=False)
    fig.suptitle(f"Per-label retrieval mAP — {inputs.title}", fontsize=LABEL_PT)
    return save_png(fig, path)


def pr_curve(inputs: PlotInputs, curves: dict, path: Path) -> Path:
    fig, (ax,) = new_figure(5.5, 4.5)
    for name in ("i2t", "t2i"):
        ax.plot(curves[name]["recall"], curves[name]["precision"], marker=".", color=COLORS[name],
                label=NAMES[name])
    ax.set_xlabel("recall (mean over queries, at rank k)")
    ax.set_ylabel("precision (mean over queries, at rank k)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Precision–recall — {inputs.title}", fontsize=9)
    return save_png(fig, path)


def map_at_k(inputs: PlotInputs, curves: dict, path: Path) -> Path:
    fig, (ax,) = new_figure(5.5, 4.5)
    for name in ("i2t", "t2i"):
        ax.plot(curves[name]["k"], curves[name]["map"], marker=".", color=COLORS[name], label=NAMES[name])
    ax.set_xscale("log")
    ax.set_xlabel("k (retrieved items)")
    ax.set_ylabel("mAP@k")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(f"mAP@k — {inputs.title}", fontsize=9)
    return save_png(fig, path)


def _tsne(vectors: np.ndarray) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise DagnnError("the t-SNE figure needs scikit-learn, from the [plots] extra: "
                         f"{install_hint('plots')}") from None
    n = len(vectors)
    # Perplexity must stay below the number of points; a few neighbours suit 24 labels.
    return TSNE(n_components=2, perplexity=min(8.0, max(1.0, (n - 1) / 3)), metric="cosine", init="pca",
                random_state=0).fit_transform(np.asarray(vectors, dtype=np.float64))


def tsne(inputs: PlotInputs, path: Path) -> Path | None:
    """Fig. 5 of the paper: t-SNE of the classifiers, the label graph's edges drawn over it. Labels are
    placed so that they do not overlap (``place_labels``); panels grow with the number of labels."""
    if len(inputs.labels) < 3:
        logger.info("t-SNE figure skipped: fewer than 3 labels")
        return None
    panels = [(inputs.classifiers, inputs.classifiers_caption)]
    if inputs.baseline is not None:
        panels.append((inputs.baseline, inputs.baseline_caption))
    n = len(inputs.labels)
    side = max(4.3, 0.85 * math.sqrt(n))  # inches per panel: ~4 labels per square inch at most
    lines = lambda text, width: _wrap(text, width, LABEL_PT).count("\n") + 1  # noqa: E731
    title_lines = max(lines(caption, side) for _, caption in panels)
    caption_lines = lines(inputs.edges_caption, side * len(panels)) if inputs.edges_caption else 0
    height = side + 0.45 + 0.22 * (title_lines + caption_lines)
    fig, axes = new_figure(side * len(panels) + 0.4, height, len(panels), layout="constrained")
    edges = None if inputs.edges is None else (np.asarray(inputs.edges) > 0)
    marker = math.sqrt(30)  # scatter size 30 pt²
    coords = []
    for ax, (vectors, caption) in zip(axes, panels):
        xy = _tsne(vectors)
        coords.append(xy)
        if edges is not None:
            for i, j in zip(*np.nonzero(np.triu(edges | edges.T, 1))):
                ax.plot(xy[[i, j], 0], xy[[i, j], 1], color="#999999", lw=0.8, alpha=0.5, zorder=1)
        ax.scatter(xy[:, 0], xy[:, 1], s=marker ** 2, color="#3366cc", zorder=2)
        pad = 0.06 * np.ptp(xy, axis=0) + 1e-6
        ax.set_xlim(xy[:, 0].min() - pad[0], xy[:, 0].max() + pad[0])
        ax.set_ylim(xy[:, 1].min() - pad[1], xy[:, 1].max() + pad[1])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(_wrap(caption, side, LABEL_PT), fontsize=LABEL_PT)
    if inputs.edges_caption:
        fig.supxlabel(_wrap(inputs.edges_caption, side * len(panels), LABEL_PT), fontsize=LABEL_PT,
                      color="#555555")
    fig.suptitle(f"t-SNE of the label classifiers — {inputs.title}", fontsize=LABEL_PT + 1)
    # Lay the figure out once and keep it: the labels are placed in its screen pixels.
    _, canvas = _matplotlib()
    canvas(fig).draw()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    for ax, xy in zip(axes, coords):
        place_labels(ax, xy, inputs.labels, LABEL_PT, marker, renderer)
    return save_png(fig, path)


def training(inputs: PlotInputs, path: Path) -> Path | None:
    rows = (inputs.history or {}).get("epochs") or []
    if not rows:
        return None
    pre = (inputs.history or {}).get("text_pretraining") or []
    fig, axes = new_figure(15.0 if pre else 10.0, 4.0, 3 if pre else 2)
    epochs = [r["epoch"] for r in rows]
    for key in ("total", "cla", "mdi", "adv"):
        if key in rows[0]:
            axes[0].plot(epochs, [r[key] for r in rows], marker=".", label=key)
    axes[0].set_title("training losses (mean per epoch)")
    for key, color in (("val_i2t", COLORS["i2t"]), ("val_t2i", COLORS["t2i"]), ("val_avg", "#333333")):
        if key in rows[0]:
            axes[1].plot(epochs, [r[key] for r in rows], marker=".", color=color, label=key)
    selected = inputs.history.get("selected_epoch")
    if selected:
        axes[1].axvline(selected, color="#2a9d3c", ls="--", label=f"selected epoch {selected}")
    axes[1].set_title("validation mAP")
    if pre:
        for key in ("train_bce", "val_bce"):
            axes[2].plot([r["epoch"] for r in pre], [r[key] for r in pre], marker=".", label=key)
        axes[2].set_title("text MLP pretraining (BCE)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Training — {inputs.title}", fontsize=10)
    return save_png(fig, path)


def tagging_confusion(inputs: PlotInputs, path: Path) -> Path:
    """Per label TP/FP/FN/TN at the thresholds; colour = rate (TP, FN over positives; FP, TN over negatives)."""
    counts = confusion_counts(inputs.image_scores, inputs.y, inputs.thresholds)
    pos = counts[:, [0, 2]].sum(1, keepdims=True)
    neg = counts[:, [1, 3]].sum(1, keepdims=True)
    denom = np.concatenate([pos, neg, pos, neg], axis=1).astype(np.float64)
    rates = np.divide(counts, denom, out=np.zeros(counts.shape), where=denom > 0)
    fig, (ax,) = new_figure(6.0, max(3.0, 0.3 * len(inputs.labels) + 1.2))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                color="white" if rates[i, j] > 0.6 else "black")
    ax.set_xticks(range(4), ["TP", "FP", "FN", "TN"])
    ax.set_yticks(range(len(inputs.labels)), inputs.labels, fontsize=8)
    fig.colorbar(im, ax=ax, label="rate (TP, FN of positives; FP, TN of negatives)")
    ax.set_title(f"Tagging at the calibrated thresholds\n{inputs.title}", fontsize=9)
    return save_png(fig, path)


FIGURES = ("per_label_ap", "pr_curve", "map_at_k", "tsne", "training", "tagging_confusion")


def write_plots(inputs: PlotInputs, out_dir, only=None) -> dict:
    """Write every figure that ``inputs`` allows (or those named in ``only``, see ``FIGURES``) into
    ``out_dir``; returns {name: path}."""
    wanted = set(FIGURES if only is None else only)
    if wanted - set(FIGURES):
        raise InputError(f"unknown figures {sorted(wanted - set(FIGURES))}; choose from {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"plots folder {shorten(str(out_dir), path=True)} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    needs_curves = wanted & {"per_label_ap", "pr_curve", "map_at_k"}
    curves = cross_modal_curves(inputs.image_emb, inputs.text_emb, inputs.y) if needs_curves else {}
    draw = {
        "per_label_ap": lambda: per_label_ap(inputs, curves, out_dir / "per_label_ap.png"),
        "pr_curve": lambda: pr_curve(inputs, curves, out_dir / "pr_curve.png"),
        "map_at_k": lambda: map_at_k(inputs, curves, out_dir / "map_at_k.png"),
        "tsne": lambda: tsne(inputs, out_dir / "tsne_classifiers.png"),
        "training": lambda: training(inputs, out_dir / "training.png"),
        "tagging_confusion": lambda: tagging_confusion(inputs, out_dir / "tagging_confusion.png"),
    }
    written = {name: draw[name]() for name in FIGURES if name in wanted}
    return {name: path for name, path in written.items() if path is not None}
