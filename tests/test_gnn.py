import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra (torch)")

from dagnn_export.gnn import GraphAttentionLayer, GraphConvLayer, MultiHopGNN  # noqa: E402


def _chain_mask(c=5):
    """Path graph 0-1-2-3-4 with self loops."""
    m = np.eye(c, dtype=np.float32)
    for i in range(c - 1):
        m[i, i + 1] = m[i + 1, i] = 1
    return torch.from_numpy(m)


def test_gat_masks_non_edges():
    torch.manual_seed(0)
    layer = GraphAttentionLayer(8, 16)
    mask = _chain_mask()
    x = torch.randn(5, 8)
    out = layer(x, mask)
    assert out.shape == (5, 16)
    x2 = x.clone()
    x2[4] += 10 * torch.randn(8)  # node 4 is not a neighbour of node 0 (nor of 1, 2)
    out2 = layer(x2, mask)
    torch.testing.assert_close(out2[:3], out[:3])
    assert not torch.allclose(out2[3], out[3])  # ... but it is a neighbour of node 3
    att = layer.attention(x, mask)
    assert torch.all(att[mask == 0] < 1e-6)
    torch.testing.assert_close(att.sum(1), torch.ones(5))


def test_gcn_layer_is_normalised_propagation():
    torch.manual_seed(0)
    layer = GraphConvLayer(4, 3)
    adj = torch.rand(5, 5)
    x = torch.randn(5, 4)
    expected = torch.nn.functional.leaky_relu(adj @ (x @ layer.linear.weight.T + layer.linear.bias), 0.2)
    torch.testing.assert_close(layer(x, adj), expected)


@pytest.mark.parametrize("kind", ["gat", "gcn"])
def test_layer_aggregation_uses_all_layers(kind):
    torch.manual_seed(0)
    gnn = MultiHopGNN(6, 8, 10, num_layers=3, kind=kind, aggregate=True)
    x, adj = torch.randn(5, 6), _chain_mask()
    outs = gnn.layer_outputs(x, adj)
    assert len(outs) == 3 and all(o.shape == (5, 8) for o in outs)
    z = gnn(x, adj)
    assert z.shape == (5, 10)
    torch.testing.assert_close(z, gnn.aggregation(torch.cat(outs, dim=1)))
    # Every layer's block of the aggregation weights affects Z.
    z.sum().backward()
    grad = gnn.aggregation.weight.grad
    for k in range(3):
        assert grad[:, 8 * k:8 * (k + 1)].abs().sum() > 0
    for layer in gnn.layers:
        assert layer.linear.weight.grad.abs().sum() > 0


def test_without_aggregation_is_last_layer():
    torch.manual_seed(0)
    gnn = MultiHopGNN(6, 8, 8, num_layers=4, kind="gat", aggregate=False)
    x, adj = torch.randn(5, 6), _chain_mask()
    assert gnn.aggregation is None
    torch.testing.assert_close(gnn(x, adj), gnn.layer_outputs(x, adj)[-1])
    with pytest.raises(ValueError):
        MultiHopGNN(6, 8, 10, num_layers=2, aggregate=False)
    with pytest.raises(ValueError, match="unknown gnn"):
        MultiHopGNN(6, 8, 8, num_layers=2, kind="gin")
