"""Multi-hop GNN (paper Fig. 3, Eq. 4): k GAT or GCN layers over the label graph, then the layer aggregation
z_i = W_ag [H1_i || ... || Hk_i] + b_ag, mapping label word vectors Q (c x d0) to classifiers Z (c x d)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GraphConvLayer(nn.Module):
    """H' = LeakyReLU(Â H W + b) with Â the symmetrically normalised correlation matrix (given)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(adj @ self.linear(x), 0.2)


class GraphAttentionLayer(nn.Module):
    """Single-head GAT layer: attention e_ij = LeakyReLU(a_src·Wh_i + a_dst·Wh_j), softmax over the
    neighbours j allowed by ``mask`` (edges + self loops), output ELU(sum_j alpha_ij W h_j)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(out_dim))
        self.att_dst = nn.Parameter(torch.empty(out_dim))
        bound = 1.0 / out_dim ** 0.5
        nn.init.uniform_(self.att_src, -bound, bound)
        nn.init.uniform_(self.att_dst, -bound, bound)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        e = F.leaky_relu((h @ self.att_src)[:, None] + (h @ self.att_dst)[None, :], 0.2)
        e = torch.where(mask > 0, e, torch.full_like(e, -1e9))
        return torch.softmax(e, dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.elu(self.attention(x, mask) @ self.linear(x))


class MultiHopGNN(nn.Module):
    """k layers of ``kind`` ("gat" | "gcn"), each ``hidden_dim`` wide; with ``aggregate`` the output is the
    linear layer aggregation over all k layers (Eq. 4), otherwise the last layer's output."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, kind: str = "gat",
                 aggregate: bool = True):
        super().__init__()
        layer_cls = {"gat": GraphAttentionLayer, "gcn": GraphConvLayer}.get(kind)
        if layer_cls is None:
            raise ValueError(f"unknown gnn kind {kind!r}; choose gat or gcn")
        if num_layers < 1:
            raise ValueError("the GNN needs at least one layer")
        if not aggregate and hidden_dim != out_dim:
            raise ValueError("without layer aggregation the last GNN layer must have the output width")
        dims = [in_dim] + [hidden_dim] * num_layers
        self.kind = kind
        self.layers = nn.ModuleList(layer_cls(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.aggregation = nn.Linear(hidden_dim * num_layers, out_dim) if aggregate else None

    def layer_outputs(self, x: torch.Tensor, adj: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for layer in self.layers:
            x = layer(x, adj)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        outputs = self.layer_outputs(x, adj)
        if self.aggregation is None:
            return outputs[-1]
        return self.aggregation(torch.cat(outputs, dim=1))
