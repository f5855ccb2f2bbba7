"""Retrieval curves for the evaluation figures: precision and recall at ranks, mAP@k over k, and mAP per
label. Same ranking and relevance as ``metrics.retrieval_map`` (cosine order, ties in database order,
relevant = shares a label with the query); numpy only, memory bounded by a batch of queries."""
from __future__ import annotations

import numpy as np

from .metrics import query_average_precisions, ranked_relevance


def rank_grid(n: int, points: int = 40) -> np.ndarray:
    """About ``points`` ranks from 1 to ``n``, spaced evenly on a log scale (integers, unique)."""
    if n < 1:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.geomspace(1, n, num=min(points, n)).round().astype(np.int64))


def ranking_curves(queries, query_labels, database, database_labels, ks=None, batch: int = 512) -> dict:
    """Mean precision@k, recall@k and mAP@k over the queries, for each k in ``ks`` (default ``rank_grid``).

    recall@k = relevant items in the top k / relevant items in the database; a query without any relevant
    item counts 0, as in mAP. mAP@k uses the definition of ``retrieval_map(k=...)``."""
    ks = rank_grid(len(database)) if ks is None else np.asarray(ks, dtype=np.int64)
    if len(ks) and (ks.min() < 1 or ks.max() > len(database)):
        raise ValueError(f"ranks must lie in 1..{len(database)}")
    top = int(ks.max()) if len(ks) else 0
    sums = {name: np.zeros(len(ks)) for name in ("precision", "recall", "map")}
    n = 0
    for _, rel, n_rel in ranked_relevance(queries, query_labels, database, database_labels, top, batch):
        hits = np.cumsum(rel, axis=1)
        ap_cum = np.cumsum(hits / np.arange(1, rel.shape[1] + 1) * rel, axis=1)
        h, a = hits[:, ks - 1], ap_cum[:, ks - 1]
        sums["precision"] += (h / ks).sum(0)
        sums["recall"] += np.divide(h, n_rel[:, None], out=np.zeros_like(h), where=n_rel[:, None] > 0).sum(0)
        sums["map"] += np.divide(a, h, out=np.zeros_like(a), where=h > 0).sum(0)
        n += len(rel)
    return {"k": ks, **{name: v / max(n, 1) for name, v in sums.items()}}


def per_label_map(queries, query_labels, database, database_labels) -> np.ndarray:
    """For each label, the mAP of the queries that carry it (NaN for a label no query carries)."""
    ap = query_average_precisions(queries, query_labels, database, database_labels)
    y = np.asarray(query_labels) > 0
    counts = y.sum(0)
    return np.divide(ap @ y, counts, out=np.full(y.shape[1], np.nan), where=counts > 0)


def cross_modal_curves(image_emb, text_emb, labels) -> dict:
    """``ranking_curves`` and ``per_label_map`` for image→text and text→image on one split."""
    out = {}
    for name, q, db in (("i2t", image_emb, text_emb), ("t2i", text_emb, image_emb)):
        out[name] = {**ranking_curves(q, labels, db, labels), "per_label": per_label_map(q, labels, db, labels)}
    return out
