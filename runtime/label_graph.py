"""The label correlation graph of DAGNN's multi-hop GNN (paper Eq. 6-8), from a label matrix (the TRAINING
labels when training). Lives in the runtime so that evaluation figures can draw it without torch.

    P_ij = M_ij / N_j          conditional probability P(L_i | L_j) from co-occurrence counts M, counts N
    B_ij = [P_ij >= tau]       binarised to drop rare (noisy) co-occurrences
    A_ij = p * B_ij (i != j),  A_ii = 1   re-weighted so a node keeps weight on itself (against over-smoothing)
"""
from __future__ import annotations

import numpy as np


def cooccurrence(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, N): M_ij = number of samples with both labels i and j, N_j = number of samples with label j."""
    y = (np.asarray(labels) > 0).astype(np.float64)
    if y.ndim != 2:
        raise ValueError(f"label matrix must be 2-D (samples x labels), got shape {y.shape}")
    m = y.T @ y
    return m, np.diag(m).copy()


def correlation_matrices(labels: np.ndarray, tau: float, p: float) -> dict[str, np.ndarray]:
    """P, B, A of Eq. 6-8. A label that never occurs gets an all-zero column in P (no edges)."""
    m, n = cooccurrence(labels)
    prob = np.divide(m, n[None, :], out=np.zeros_like(m), where=n[None, :] > 0)
    binary = (prob >= tau).astype(np.float64)
    np.fill_diagonal(binary, 0.0)
    adj = p * binary
    np.fill_diagonal(adj, 1.0)
    return {"P": prob.astype(np.float32), "B": binary.astype(np.float32), "A": adj.astype(np.float32)}
