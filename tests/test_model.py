import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra (torch)")

from dagnn_export.config import TrainConfig, make_config  # noqa: E402
from dagnn_export.graph import correlation_matrices, propagation_matrix  # noqa: E402
from dagnn_export.losses import adversarial_loss, dagnn_loss  # noqa: E402
from dagnn_export.model import build_model, grad_reverse  # noqa: E402

C, DV, V, N = 6, 20, 30, 8
SMALL = dict(common_dim=32, text_hidden=64, text_dim=16, gv2_hidden=16, gt2_hidden=24, disc_hidden=12)


def small_model(variant="dagnn", **kw):
    cfg = make_config("mirflickr", variant, **{**SMALL, **kw})
    rng = np.random.default_rng(0)
    y = (rng.random((50, C)) < 0.4).astype(np.float32)
    graph = correlation_matrices(y, cfg.resolved_tau(), cfg.p)
    torch.manual_seed(0)
    return build_model(cfg, DV, V, rng.standard_normal((C, 10)), propagation_matrix(graph, cfg.gnn)), cfg


def batch():
    torch.manual_seed(1)
    return torch.rand(N, DV), (torch.rand(N, V) < 0.2).float(), (torch.rand(N, C) < 0.4).float()


def test_grl_is_identity_forward_and_flips_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    y = grad_reverse(x, 0.5)
    torch.testing.assert_close(y, x)
    (y * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * torch.arange(3.0).expand(4, 3))


def test_shapes_of_each_part():
    model, cfg = small_model()
    h_v, bow, _ = batch()
    out = model(h_v, bow)
    assert out["v"].shape == (N, 32) and out["t"].shape == (N, 32)
    assert model.image_common(h_v).shape == (N, 32) and model.text_common(bow).shape == (N, 32)
    assert out["h_t"].shape == (N, 16)
    assert out["r_t"].shape == (N, 16) and out["r_v"].shape == (N, DV)  # cross reconstructions
    assert model.classifiers().shape == (C, 32)
    assert out["scores_v"].shape == (N, C) and out["scores_t"].shape == (N, C)
    assert out["scores_v"].abs().max() <= 1 + 1e-5  # cosines
    assert len(out["adv"]) == 4 and all(logits.shape == (N, 2) for logits, _ in out["adv"])
    assert [m for _, m in out["adv"]] == [0, 1, 0, 1]  # Eq. 11: h_v image, r_v text, r_t image, h_t text


def test_discriminators_minimise_and_generators_maximise_adv_in_one_step():
    model, cfg = small_model()
    h_v, bow, _ = batch()
    model.eval()  # deterministic forward (no dropout); gradients flow the same way
    disc = [p for n, p in model.named_parameters() if n.startswith("disc_")]
    gens = [p for n, p in model.named_parameters() if n.startswith(("gt2", "gv2", "gv1", "gt1"))]

    def adv():
        return adversarial_loss(model(h_v, bow)["adv"])

    for params, direction in ((disc, -1), (gens, +1)):
        before = adv().item()
        model.zero_grad()
        adv().backward()
        with torch.no_grad():
            for p in params:
                p -= 1e-2 * p.grad  # a plain descent step on the same scalar
        after = adv().item()
        assert (after - before) * direction > 0, (direction, before, after)


def test_variant_switches_remove_what_they_say():
    h_v, bow, y = batch()
    names = lambda m: {n.split(".")[0] for n, _ in m.named_parameters()}  # noqa: E731

    full, _ = small_model("dagnn")
    assert {"gv2", "gt2", "disc_v", "disc_t", "gnn"} <= names(full)

    m3, cfg3 = small_model("dagnn-3")
    assert not any(n.startswith("disc") for n in names(m3)) and "gv2" not in names(m3)
    terms = dagnn_loss(m3(h_v, bow), y, cfg3)
    assert "adv" not in terms
    terms["total"].backward()  # and nothing adversarial receives gradients
    assert m3(h_v, bow)["adv"] == []

    m4, cfg4 = small_model("dagnn-4")
    assert "gv2" not in names(m4) and "gt2" not in names(m4) and "disc_v" not in names(m4)
    out4 = m4(h_v, bow)
    assert "r_v" not in out4 and len(out4["adv"]) == 2  # one discriminator on v (image) vs t (text)
    assert "adv" in dagnn_loss(out4, y, cfg4)

    m5, _ = small_model("dagnn-5")
    assert m5.gnn is None and not any("gnn" in n for n, _ in m5.named_parameters())
    assert m5.classifiers() is m5.linear_classifier

    m1, cfg1 = small_model("dagnn-1")
    assert set(dagnn_loss(m1(h_v, bow), y, cfg1)) == {"mdi", "adv", "total"}
    m2, cfg2 = small_model("dagnn-2")
    assert set(dagnn_loss(m2(h_v, bow), y, cfg2)) == {"cla", "adv", "total"}


@pytest.mark.parametrize("gnn,layers,agg", [("gat", 2, True), ("gcn", 3, False), ("gcn", 1, True)])
def test_gnn_options(gnn, layers, agg):
    model, cfg = small_model(gnn=gnn, gnn_layers=layers, layer_aggregation=agg)
    assert len(model.gnn.layers) == layers and model.gnn.kind == gnn
    assert (model.gnn.aggregation is not None) == agg
    assert cfg.resolved_tau() == {"gat": 0.3, "gcn": 0.4}[gnn]
    assert model.classifiers().shape == (C, 32)


def test_frozen_text_mlp_stays_in_eval_mode():
    model, _ = small_model(freeze_text_mlp=True)
    model.train()
    assert model.gv1.training and not model.text_mlp.training
    model2, _ = small_model(freeze_text_mlp=False)
    model2.train()
    assert model2.text_mlp.training


def test_config_round_trip_and_bad_values():
    cfg = make_config("nuswide", "dagnn-5", gnn="gcn", epochs=3)
    assert cfg.batch_size == 1024 and cfg.gnn_layers == 5 and cfg.classifier == "linear"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown variant"):
        make_config(variant="dagnn-9")
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"lr": 1.0, "lerning_rate": 2})
    with pytest.raises(ValueError, match="gnn"):
        make_config(gnn="gin")
