"""Retrieval curves and tagging confusion counts (runtime, numpy only), checked against hand-worked and
brute-force values."""
import numpy as np
import pytest

from dagnn_runtime.curves import per_label_map, rank_grid, ranking_curves
from dagnn_runtime.metrics import confusion_counts, query_average_precisions, retrieval_map, tagging_metrics

# One query, database of 4 in cosine order d0 > d1 > d2 > d3; relevant: d0, d2 (share label 0).
Q = np.array([[1.0, 0.0]])
QY = np.array([[1, 0]])
DB = np.array([[1.0, 0.0], [0.9, 0.3], [0.5, 0.5], [0.0, 1.0]])
DBY = np.array([[1, 0], [0, 1], [1, 1], [0, 1]])


def test_precision_recall_and_map_at_each_rank_by_hand():
    c = ranking_curves(Q, QY, DB, DBY, ks=[1, 2, 3, 4])
    np.testing.assert_allclose(c["precision"], [1, 1 / 2, 2 / 3, 2 / 4])
    np.testing.assert_allclose(c["recall"], [1 / 2, 1 / 2, 1, 1])
    np.testing.assert_allclose(c["map"], [1, 1, (1 + 2 / 3) / 2, (1 + 2 / 3) / 2])


def test_curves_agree_with_retrieval_map_on_random_data():
    rng = np.random.default_rng(0)
    q, db = rng.standard_normal((37, 8)), rng.standard_normal((53, 8))
    qy, dby = rng.random((37, 5)) < 0.2, rng.random((53, 5)) < 0.2
    ks = [1, 5, 20, 53]
    c = ranking_curves(q, qy, db, dby, ks=ks, batch=7)
    for k, value in zip(ks, c["map"]):
        assert value == pytest.approx(retrieval_map(q, qy, db, dby, k=k))
    # brute force precision@5 and recall@5
    sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (db / np.linalg.norm(db, axis=1, keepdims=True)).T
    rel = (qy.astype(int) @ dby.T.astype(int)) > 0
    top5 = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    hits = np.take_along_axis(rel, top5, axis=1).sum(1)
    assert c["precision"][1] == pytest.approx((hits / 5).mean())
    n_rel = rel.sum(1)
    assert c["recall"][1] == pytest.approx(np.where(n_rel > 0, hits / np.maximum(n_rel, 1), 0).mean())
    assert c["recall"][-1] == pytest.approx((n_rel > 0).mean())  # everything retrieved at k = database size


def test_per_label_map_averages_the_queries_carrying_each_label():
    rng = np.random.default_rng(1)
    q, db = rng.standard_normal((20, 4)), rng.standard_normal((30, 4))
    qy, dby = rng.random((20, 3)) < 0.4, rng.random((30, 3)) < 0.4
    qy[:, 2] = False  # no query carries label 2
    ap = query_average_precisions(q, qy, db, dby)
    got = per_label_map(q, qy, db, dby)
    for j in range(2):
        assert got[j] == pytest.approx(ap[qy[:, j]].mean())
    assert np.isnan(got[2])


def test_rank_grid_and_bad_ranks():
    g = rank_grid(2000)
    assert g[0] == 1 and g[-1] == 2000 and np.all(np.diff(g) > 0)
    assert list(rank_grid(3)) == [1, 2, 3]
    with pytest.raises(ValueError, match="ranks"):
        ranking_curves(Q, QY, DB, DBY, ks=[0, 5])


def test_confusion_counts_and_tagging_metrics_agree():
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.2], [0.2, 0.8]])
    targets = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    counts = confusion_counts(scores, targets, np.array([0.5, np.inf]))
    np.testing.assert_array_equal(counts, [[1, 1, 1, 1], [0, 0, 2, 2]])  # TP FP FN TN; label 1 never predicted
    assert counts.sum(1).tolist() == [4, 4]
    m = tagging_metrics(scores, targets, np.array([0.5, np.inf]))
    assert m["OF1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 3))
