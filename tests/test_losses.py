import math

import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra (torch)")

from dagnn_export.config import make_config  # noqa: E402
from dagnn_export.losses import (adversarial_loss, classification_loss, dagnn_loss, label_similarity,  # noqa: E402
                                 modality_invariance_loss, pairwise_logistic)


def sp(x):
    return math.log(1 + math.exp(x))


def test_classification_loss_is_mean_l2_norm():
    scores = torch.tensor([[0.5, 0.0], [1.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # per-sample norms 0.5 and 1.0 (not squared)
    assert classification_loss(scores, y).item() == pytest.approx(0.75)


def test_label_similarity_means_sharing_a_label():
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    s = label_similarity(y, y)
    assert s.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]  # 0/1 even when two labels are shared


def test_modality_invariance_on_hand_computed_inputs():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # S = identity
    # Γ = ½cos(v_i, t_j) = [[.5, .5], [0, 0]]; Φ = ½cos(v_i, v_j) = [[.5, 0], [0, .5]]; Θ = [[.5, .5], [.5, .5]]
    gamma = (sp(.5) - .5 + sp(.5) + sp(0) + sp(0)) / 4
    phi = (sp(.5) - .5 + sp(0) + sp(0) + sp(.5) - .5) / 4
    theta = (sp(.5) - .5 + sp(.5) + sp(.5) + sp(.5) - .5) / 4
    assert modality_invariance_loss(v, t, y).item() == pytest.approx(gamma + phi + theta, rel=1e-6)


def test_pairwise_logistic_is_numerically_stable():
    x = torch.tensor([[200.0, -200.0]])
    s = torch.tensor([[1.0, 0.0]])
    value = pairwise_logistic(x, s)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(0.0, abs=1e-6)  # softplus(200) - 200 = 0, softplus(-200) = 0


def test_adversarial_loss_is_cross_entropy_with_modal_labels():
    adv = [(torch.zeros(3, 2), 0), (torch.tensor([[2.0, 0.0]]), 1)]
    expected = math.log(2) + math.log(1 + math.exp(2))
    assert adversarial_loss(adv).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        adversarial_loss([])


def _fake_outputs():
    torch.manual_seed(0)
    return {"scores_v": torch.rand(4, 3), "scores_t": torch.rand(4, 3), "v": torch.randn(4, 5),
            "t": torch.randn(4, 5), "adv": [(torch.randn(4, 2), 0), (torch.randn(4, 2), 1)]}


def test_total_loss_weights_and_switches():
    out, y = _fake_outputs(), (torch.rand(4, 3) > 0.5).float()
    cfg = make_config(alpha=0.3, beta=0.7)
    terms = dagnn_loss(out, y, cfg)
    assert set(terms) == {"cla", "mdi", "adv", "total"}
    expected = terms["cla"] + 0.3 * terms["mdi"] + 0.7 * terms["adv"]
    assert terms["total"].item() == pytest.approx(expected.item())
    assert terms["cla"].item() == pytest.approx(
        (classification_loss(out["scores_v"], y) + classification_loss(out["scores_t"], y)).item())
    for variant, gone in (("dagnn-1", "cla"), ("dagnn-2", "mdi"), ("dagnn-3", "adv")):
        terms = dagnn_loss(out, y, make_config(variant=variant))
        assert gone not in terms and "total" in terms
