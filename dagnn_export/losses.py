"""DAGNN objective (paper Eq. 9-12).

L_cla (Eq. 9):  mean_i ||ŷv_i - y_i||_2 + mean_i ||ŷt_i - y_i||_2   (L2 norm per sample, not squared)
L_mdi (Eq. 10): for each of (v,t), (v,v), (t,t): mean_ij softplus(X_ij) - S_ij X_ij with X_ij = ½cos(a_i, b_j).
    The paper writes S = y_i y_j^T, which for multi-label y is a count, not a 0/1 relevance. We use
    S_ij = 1 iff samples i and j share at least one label — exactly the relevance the retrieval mAP uses.
L_adv (Eq. 11): sum over the discriminator outputs of the cross-entropy with the true modal label.
Total: L_cla + α L_mdi + β L_adv, minimised by one optimiser; the gradient reversal layers in front of the
discriminators turn the last term into -β L_adv for the generators/encoders (Eq. 12's minimax).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def label_similarity(y_a: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 when rows i of y_a and j of y_b share at least one label, else 0."""
    return (((y_a > 0).float() @ (y_b > 0).float().T) > 0).float()


def classification_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 9 for one modality: mean over samples of the L2 norm of (predicted scores - labels)."""
    return (scores - y).norm(dim=1).mean()


def _cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=1, eps=1e-8) @ F.normalize(b, dim=1, eps=1e-8).T


def pairwise_logistic(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """mean_ij log(1 + e^x_ij) - s_ij x_ij, with softplus for numerical stability."""
    return (F.softplus(x) - s * x).mean()


def modality_invariance_loss(v: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 10: inter-modal (v,t) plus intra-modal (v,v) and (t,t) terms with Γ, Φ, Θ = ½cos."""
    s = label_similarity(y, y)
    return (pairwise_logistic(0.5 * _cosine_matrix(v, t), s)
            + pairwise_logistic(0.5 * _cosine_matrix(v, v), s)
            + pairwise_logistic(0.5 * _cosine_matrix(t, t), s))


def adversarial_loss(adv: list) -> torch.Tensor:
    """Eq. 11: sum of the mean cross-entropies of each discriminator output with its modal label."""
    if not adv:
        raise ValueError("no discriminator outputs to compute L_adv from")
    total = 0.0
    for logits, modality in adv:
        target = torch.full((logits.shape[0],), modality, dtype=torch.long, device=logits.device)
        total = total + F.cross_entropy(logits, target)
    return total


def dagnn_loss(out: dict, y: torch.Tensor, config) -> dict:
    """The loss terms a variant uses and their weighted sum ``total`` (what the optimiser minimises)."""
    terms = {}
    total = torch.zeros((), device=y.device)
    if config.use_cla:
        terms["cla"] = classification_loss(out["scores_v"], y) + classification_loss(out["scores_t"], y)
        total = total + terms["cla"]
    if config.use_mdi:
        terms["mdi"] = modality_invariance_loss(out["v"], out["t"], y)
        total = total + config.alpha * terms["mdi"]
    if config.use_adv:
        terms["adv"] = adversarial_loss(out["adv"])
        total = total + config.beta * terms["adv"]
    terms["total"] = total
    return terms
