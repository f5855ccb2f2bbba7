"""Retrieval and tagging metrics, shared by training-side and runtime-side evaluation.

Retrieval mAP follows the evaluation of the DAGNN/DSCMR authors: every query is ranked against the whole
database by cosine similarity; an item is relevant when it shares at least one label with the query; the
AP of a query is the mean of the precisions at the ranks of its relevant items (within the top ``k`` when
``k`` is given, normalised by the relevant items found there); a query with no relevant item scores 0;
mAP is the mean over queries.

Tie order: items with equal similarity keep database order (stable sort), so results are reproducible.
Zero vectors: their cosine with anything is defined as 0 instead of NaN.
"""
from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]  # np.linalg.norm's checks cost a query 10 µs
    return x / np.maximum(norm, eps)


def ranked_relevance(queries: np.ndarray, query_labels: np.ndarray, database: np.ndarray,
                     database_labels: np.ndarray, k: int | None = None, batch: int = 512):
    """Yield ``(start, rel, n_rel)`` per batch of queries: ``rel`` (batch x k, 0/1) is the relevance of the
    top ``k`` database items in cosine order (ties in database order), ``n_rel`` the number of relevant
    items in the whole database. Memory is bounded by ``batch`` x database size."""
    queries, database = np.asarray(queries), np.asarray(database)
    if len(queries) != len(query_labels) or len(database) != len(database_labels):
        raise ValueError("embeddings and label matrices must have the same number of rows")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"query dim {queries.shape[1]} != database dim {database.shape[1]}")
    k = len(database) if k is None or k <= 0 else min(k, len(database))
    db_norm = l2_normalize(database)
    db_labels = (np.asarray(database_labels) > 0).astype(np.float32)
    for start in range(0, len(queries), batch):
        sim = l2_normalize(queries[start:start + batch]) @ db_norm.T
        # Negate so a stable ascending sort puts higher similarity first and keeps ties in database order.
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        q_labels = (np.asarray(query_labels[start:start + batch]) > 0).astype(np.float32)
        relevant = (q_labels @ db_labels.T) > 0
        yield start, np.take_along_axis(relevant, order, axis=1).astype(np.float64), relevant.sum(1)


def query_average_precisions(queries: np.ndarray, query_labels: np.ndarray, database: np.ndarray,
                             database_labels: np.ndarray, k: int | None = None, batch: int = 512) -> np.ndarray:
    """AP (or AP@k) of every query, ranking ``database`` by cosine similarity."""
    ap = np.zeros(len(queries), dtype=np.float64)
    for start, rel, _ in ranked_relevance(queries, query_labels, database, database_labels, k, batch):
        hits = np.cumsum(rel, axis=1)
        n_found = hits[:, -1] if rel.shape[1] else np.zeros(len(rel))
        precision_sum = (hits / np.arange(1, rel.shape[1] + 1) * rel).sum(axis=1)
        ap[start:start + len(rel)] = np.where(n_found > 0, precision_sum / np.maximum(n_found, 1), 0.0)
    return ap


def retrieval_map(queries: np.ndarray, query_labels: np.ndarray, database: np.ndarray,
                  database_labels: np.ndarray, k: int | None = None, batch: int = 512) -> float:
    """mAP (or mAP@k) of ranking ``database`` for each query by cosine similarity."""
    ap = query_average_precisions(queries, query_labels, database, database_labels, k, batch)
    return float(ap.mean()) if len(ap) else 0.0


def cross_modal_map(image_emb, text_emb, labels, k: int | None = None) -> dict:
    """Image2Text and Text2Image mAP with queries and database both from the same split."""
    i2t = retrieval_map(image_emb, labels, text_emb, labels, k=k)
    t2i = retrieval_map(text_emb, labels, image_emb, labels, k=k)
    return {"i2t": i2t, "t2i": t2i, "avg": (i2t + t2i) / 2}


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one label: rank samples by score (stable), mean precision at each positive. NaN if no positive."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    t = (np.asarray(targets)[order] > 0).astype(np.float64)
    if t.sum() == 0:
        return float("nan")
    hits = np.cumsum(t)
    return float((hits / np.arange(1, len(t) + 1) * t).sum() / t.sum())


def f1_from_counts(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def tagging_metrics(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> dict:
    """Per-label AP and its mean over labels with a positive, and CF1 (per-label F1 averaged as
    2·CP·CR/(CP+CR)) / OF1 (overall F1) at the given per-label decision thresholds."""
    scores, targets = np.asarray(scores), np.asarray(targets) > 0
    per_label_ap = [average_precision(scores[:, j], targets[:, j]) for j in range(scores.shape[1])]
    tp, fp, fn, _ = confusion_counts(scores, targets, thresholds).T.astype(np.float64)
    cp = np.mean(np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0))
    cr = np.mean(np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0))
    valid = [ap for ap in per_label_ap if not np.isnan(ap)]
    return {
        "per_label_ap": [None if np.isnan(ap) else ap for ap in per_label_ap],
        "mean_ap": float(np.mean(valid)) if valid else float("nan"),
        "CP": float(cp), "CR": float(cr), "CF1": float(0.0 if cp + cr == 0 else 2 * cp * cr / (cp + cr)),
        "OF1": f1_from_counts(tp.sum(), fp.sum(), fn.sum()),
    }


def confusion_counts(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per label, (TP, FP, FN, TN) of predicting the label when its score >= its threshold: (labels x 4)."""
    scores, targets = np.asarray(scores), np.asarray(targets) > 0
    pred = scores >= np.asarray(thresholds)[None, :]
    return np.stack([(pred & targets).sum(0), (pred & ~targets).sum(0), (~pred & targets).sum(0),
                     (~pred & ~targets).sum(0)], axis=1).astype(np.int64)


def calibrate_thresholds(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the score threshold that maximises F1 on (validation) data; returns (thresholds, f1).

    Candidate thresholds are midpoints between consecutive distinct scores, so the choice does not sit
    exactly on a validation sample. A label with no positive gets threshold +inf (never predicted).
    """
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets) > 0
    n, c = scores.shape
    thresholds, best_f1 = np.full(c, np.inf), np.zeros(c)
    for j in range(c):
        pos = targets[:, j].sum()
        if pos == 0:
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        s, t = scores[order, j], targets[order, j]
        tp = np.cumsum(t)
        predicted = np.arange(1, n + 1)
        f1 = 2 * tp / (predicted + pos)
        # Only cut where the next score differs, otherwise the threshold could not separate them.
        cut_ok = np.append(s[:-1] > s[1:], True)
        f1 = np.where(cut_ok, f1, -1)
        best = int(np.argmax(f1))
        best_f1[j] = f1[best]
        thresholds[j] = (s[best] + s[best + 1]) / 2 if best + 1 < n else s[best] - 1e-6
    return thresholds.astype(np.float32), best_f1


def thresholds_to_json(thresholds) -> list:
    """Thresholds as JSON values: an infinite one (a label never predicted) becomes null, since JSON has no
    infinity; ``thresholds_from_json`` reads them back."""
    return [float(x) if np.isfinite(x) else None for x in np.asarray(thresholds, dtype=np.float64)]


def thresholds_from_json(values) -> np.ndarray:
    """The inverse of ``thresholds_to_json``: null becomes +inf."""
    return np.array([np.inf if x is None else x for x in values], dtype=np.float64)


def above_thresholds(row, thresholds, top: int | None = None) -> np.ndarray:
    """The positions of the labels whose score reaches its calibrated threshold, highest score first, at most
    ``top``: the one rule behind tagging, an item's ``predicted_labels`` and the label filter."""
    row = np.asarray(row)
    keep = np.flatnonzero(row >= np.asarray(thresholds))
    keep = keep[np.argsort(-row[keep], kind="stable")]
    return keep if top is None else keep[: max(0, int(top))]
