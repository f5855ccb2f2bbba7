"""The label correlation graph of the multi-hop GNN (paper Eq. 6-8), built from TRAINING labels only.

P, B and A themselves are computed in ``dagnn_runtime.label_graph`` (re-exported here); this module turns
them into what the GNN layers are given.

GCN propagates with the symmetric normalisation D^-1/2 A D^-1/2; GAT only uses which entries are edges
(B plus self loops) as its attention mask, so p does not matter for GAT (as the paper notes).
"""
from __future__ import annotations

import numpy as np

from dagnn_runtime.label_graph import cooccurrence, correlation_matrices

__all__ = ["cooccurrence", "correlation_matrices", "gcn_normalize", "gat_mask", "propagation_matrix"]


def gcn_normalize(adj: np.ndarray) -> np.ndarray:
    """D^-1/2 A D^-1/2 with D the row sums of A (every row has its self loop, so D > 0)."""
    adj = np.asarray(adj, dtype=np.float64)
    deg = adj.sum(1)
    if np.any(deg <= 0):
        raise ValueError("adjacency has a row without any weight (missing self loop?)")
    d = deg ** -0.5
    return (d[:, None] * adj * d[None, :]).astype(np.float32)


def gat_mask(binary: np.ndarray) -> np.ndarray:
    """1 where node i may attend to node j: the edges of B plus self loops."""
    mask = (np.asarray(binary) > 0).astype(np.float32)
    np.fill_diagonal(mask, 1.0)
    return mask


def propagation_matrix(graph: dict[str, np.ndarray], gnn: str, direction: str = "given") -> np.ndarray:
    """What the GNN layers are given: the normalised A for GCN, the binary attention mask for GAT.

    Row i of the result is what node i aggregates from. ``direction="given"`` uses A and B as built (i reads
    j when P(L_i|L_j) >= tau); ``"transposed"`` uses their transposes (i reads j when P(L_j|L_i) >= tau)."""
    if direction not in ("given", "transposed"):
        raise ValueError(f"unknown graph direction {direction!r}")
    flip = (lambda m: m.T) if direction == "transposed" else (lambda m: m)
    if gnn == "gcn":
        return gcn_normalize(flip(graph["A"]))
    if gnn == "gat":
        return gat_mask(flip(graph["B"]))
    raise ValueError(f"unknown gnn {gnn!r}")
