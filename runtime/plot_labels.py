"""Where to write the labels of a scatter plot's points so that they do not overlap (the t-SNE figure of
``plots``): a small search written here rather than a dependency (adjustText-like, simpler). numpy only; it
works on a laid-out matplotlib axes that it is handed."""
from __future__ import annotations

import numpy as np


def _overlaps(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Overlap area of each of ``boxes`` (rows x0, y0, x1, y1) with each of ``others``: (len(boxes), len(others))."""
    w = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0])
    h = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


# Where a label may go around its point, in order of preference: right, above right, above left, left,
# above, below, below right, below left, then the 8 directions between those; then the same further out
# (gaps beyond the marker, in points).
_ANGLES = np.radians([0, 45, 135, 180, 90, 270, 315, 225, 22.5, 157.5, 202.5, 337.5, 67.5, 112.5, 247.5, 292.5])
_GAPS_PT = np.array([1.5, 4, 8, 13, 19, 26, 35, 46, 60, 76])


def place_labels(ax, xy: np.ndarray, labels, fontsize: float, marker_pt: float, renderer) -> list:
    """Write ``labels`` beside their points ``xy`` (data coordinates) so that no two overlap, none covers
    another point and all stay inside the axes, where the room allows: a simple search written here (no
    adjustText). Works in screen pixels of the figure as laid out (its layout must not change afterwards).

    Each label weighs 160 places around its point (16 directions, 10 distances) and takes the cheapest:
    overlapping a label already placed costs most, then leaving the axes, then covering another point,
    then sitting nearer to another point than to its own (a reader would pair it with that one), then
    distance. Labels of crowded points choose first. A label away from its point gets a thin line to it.
    Returns the annotations."""
    fig = ax.figure
    px_per_pt = fig.dpi / 72
    pts = ax.transData.transform(np.asarray(xy, dtype=np.float64))
    frame = ax.get_window_extent(renderer)
    inner = np.array([[frame.x0 + 2, frame.y0 + 2, frame.x1 - 2, frame.y1 - 2]])
    sizes = []
    for label in labels:
        probe = ax.text(0, 0, label, fontsize=fontsize)
        bb = probe.get_window_extent(renderer)
        probe.remove()
        sizes.append((bb.width + 3, bb.height + 2))  # + the white backing of the text
    r = marker_pt / 2 * px_per_pt + 1
    dots = np.column_stack([pts - r, pts + r])
    near = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1) < (40 * px_per_pt) ** 2
    order = np.argsort(-near.sum(1), kind="stable")
    # candidate centres relative to the point, per unit of label size: (gap, angle) grid, nearest first
    dist = (r + _GAPS_PT[:, None] * px_per_pt) * np.ones((1, len(_ANGLES)))
    ux, uy = np.cos(_ANGLES)[None, :] * np.ones_like(dist), np.sin(_ANGLES)[None, :] * np.ones_like(dist)
    dist, ux, uy = dist.ravel(), ux.ravel(), uy.ravel()
    gaps = np.repeat(_GAPS_PT, len(_ANGLES))
    placed = np.zeros((0, 4))
    chosen = {}
    for i in order:
        (px, py), (w, h) = pts[i], sizes[i]
        cx = px + ux * dist + w / 2 * np.clip(ux * 1.5, -1, 1)
        cy = py + uy * dist + h / 2 * np.clip(uy * 1.5, -1, 1)
        boxes = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        outside = w * h - _overlaps(boxes, inner)[:, 0]
        # distance from each candidate box to every point; another point nearer than its own misleads
        dx = np.maximum(np.maximum(boxes[:, None, 0] - pts[None, :, 0], pts[None, :, 0] - boxes[:, None, 2]), 0)
        dy = np.maximum(np.maximum(boxes[:, None, 1] - pts[None, :, 1], pts[None, :, 1] - boxes[:, None, 3]), 0)
        to_point = np.hypot(dx, dy)
        own, other = to_point[:, i], np.delete(to_point, i, axis=1)
        misleading = np.clip(own - (other.min(1) if other.shape[1] else own), 0, None)
        cost = (100 * outside + 50 * _overlaps(boxes, placed).sum(1)
                + 10 * _overlaps(boxes, np.delete(dots, i, axis=0)).sum(1) + 4 * misleading + 0.3 * own
                + 0.01 * np.arange(len(boxes)))  # ties: the preferred place
        best = int(np.argmin(cost))
        chosen[i] = (boxes[best], gaps[best])
        placed = np.vstack([placed, boxes[best]])
    notes = []
    for i, label in enumerate(labels):
        box, gap = chosen[i]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        offset = ((cx - pts[i, 0]) / px_per_pt, (cy - pts[i, 1]) / px_per_pt)
        far = gap > _GAPS_PT[1]
        line = dict(arrowstyle="-", color="#3366cc", lw=0.8, alpha=0.8, shrinkA=0, shrinkB=1) if far else None
        notes.append(ax.annotate(label, xy[i], xytext=offset, textcoords="offset points", ha="center",
                                 va="center", fontsize=fontsize, zorder=3, arrowprops=line,
                                 bbox=dict(boxstyle="square,pad=0.06", fc="white", ec="none", alpha=0.7)))
    return notes
