"""The DAGNN model (Qian et al., AAAI 2021) on cached image features h_v and bag-of-words text.

    ImgGAN:  h_v --Gv1 (Linear->1024, ReLU)--> v --Gv2 (1024->512->300, LeakyReLU 0.2)--> r_t  (fake h_t)
    TxtGAN:  bow --text MLP (dt->4096->300)--> h_t --Gt1 (Linear->1024, ReLU)--> t
                                              t --Gt2 (1024->2048->dv, ReLU)--> r_v  (fake h_v)
    Dv: h_v vs r_v, Dt: h_t vs r_t (2-way softmax, Eq. 3), each behind a gradient reversal layer, so one
    optimiser step minimises the loss for the discriminators and maximises L_adv for everything before them.
    Multi-hop GNN: label word vectors + label graph -> classifiers Z (c x 1024); scores cos(v, z_j), cos(t, z_j).

Variants switch parts off: no generators/discriminators without L_adv, one discriminator on v vs t for
DAGNN-4 (``adversary="common"``), a learned matrix Z instead of the GNN for DAGNN-5 (``classifier="linear"``).
Everything a restored model needs (label vectors, propagation matrix, input statistics) is a buffer, so the
state_dict alone restores it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import TrainConfig
from .gnn import MultiHopGNN

IMAGE, TEXT = 0, 1  # modal labels: column 0 = image, column 1 = text (Eq. 3)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient multiplied by -scale backward (Ganin & Lempitsky 2015)."""
    return _GradReverse.apply(x, scale)


class TextMLP(nn.Module):
    """fct1, fct2: dt -> 4096 -> 300 (LeakyReLU 0.2), plus the label head used only for its pretraining."""

    def __init__(self, vocab_size: int, hidden: int, out_dim: int, num_labels: int, dropout: float = 0.5):
        super().__init__()
        self.fc1 = nn.Linear(vocab_size, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(out_dim, num_labels)

    def forward(self, bow: torch.Tensor) -> torch.Tensor:
        return self.after_first_layer(self.fc1(bow))

    def after_first_layer(self, h1: torch.Tensor) -> torch.Tensor:
        """The MLP from fc1's output on (the exported text graph computes fc1 as a lookup of tag rows)."""
        x = self.drop(F.leaky_relu(h1, 0.2))
        return F.leaky_relu(self.fc2(x), 0.2)

    def logits(self, bow: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self(bow)))


class Discriminator(nn.Module):
    """Modality classifier behind a GRL; inputs are z-scored with the statistics of the real features."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((grad_reverse(x) - self.mean) / self.std)


class DAGNN(nn.Module):
    def __init__(self, config: TrainConfig, feature_dim: int, vocab_size: int, label_embeddings, adjacency):
        super().__init__()
        cfg = config
        self.config = cfg
        emb = torch.as_tensor(np.asarray(label_embeddings), dtype=torch.float32)
        adj = torch.as_tensor(np.asarray(adjacency), dtype=torch.float32)
        c = emb.shape[0]
        if adj.shape != (c, c):
            raise ValueError(f"adjacency shape {tuple(adj.shape)} does not match {c} labels")
        d = cfg.common_dim
        # Fine-tuning (``trunk_blocks`` > 0): the inputs are cached trunk maps and the backbone's head is part
        # of the model (Eq. 1's θcnn, its last blocks only); Gv1 and the discriminator see its pooled output.
        self.image_head = None
        if cfg.trunk_blocks:
            from .backbone_split import build_head

            self.image_head = build_head(cfg.to_dict())
            with torch.no_grad():
                feature_dim = int(self.image_head(torch.zeros(1, feature_dim)).shape[1])
        self.register_buffer("label_embeddings", emb)
        self.register_buffer("adjacency", adj)
        self.register_buffer("image_mean", torch.zeros(feature_dim))
        self.register_buffer("image_std", torch.ones(feature_dim))
        self.register_buffer("text_mean", torch.zeros(cfg.text_dim))
        self.register_buffer("text_std", torch.ones(cfg.text_dim))
        self.drop = nn.Dropout(cfg.dropout)

        self.gv1 = nn.Linear(feature_dim, d)
        self.text_mlp = TextMLP(vocab_size, cfg.text_hidden, cfg.text_dim, c, cfg.text_dropout)
        self.gt1 = nn.Linear(cfg.text_dim, d)

        self.gv2 = self.gt2 = self.disc_v = self.disc_t = self.disc_common = None
        if cfg.use_adv and cfg.adversary == "dual":
            self.gv2 = nn.Sequential(nn.Linear(d, cfg.gv2_hidden), nn.LeakyReLU(0.2),
                                     nn.Linear(cfg.gv2_hidden, cfg.text_dim), nn.LeakyReLU(0.2))
            self.gt2 = nn.Sequential(nn.Linear(d, cfg.gt2_hidden), nn.ReLU(),
                                     nn.Linear(cfg.gt2_hidden, feature_dim), nn.ReLU())
            self.disc_v = Discriminator(feature_dim, cfg.disc_hidden)
            self.disc_t = Discriminator(cfg.text_dim, cfg.disc_hidden)
        elif cfg.use_adv:
            self.disc_common = Discriminator(d, cfg.disc_hidden)

        self.gnn = self.linear_classifier = None
        if cfg.classifier == "gnn":
            self.gnn = MultiHopGNN(emb.shape[1], d, d, cfg.gnn_layers, cfg.gnn, cfg.layer_aggregation)
        else:
            self.linear_classifier = nn.Parameter(torch.randn(c, d) / d ** 0.5)

    # -- the parts the exporter and the evaluation use -------------------------------------------------
    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """h_v: the cached features themselves, or the backbone head's output on cached trunk maps."""
        return x if self.image_head is None else self.image_head(x)

    def image_common(self, x: torch.Tensor) -> torch.Tensor:
        return self._common_of_features(self.image_features(x))

    def _common_of_features(self, h_v: torch.Tensor) -> torch.Tensor:
        """Gv1 on z-scored h_v: v."""
        return F.relu(self.gv1(self.drop((h_v - self.image_mean) / self.image_std)))

    def text_features(self, bow: torch.Tensor) -> torch.Tensor:
        return self.text_mlp(bow)

    def text_common(self, bow: torch.Tensor, h_t: torch.Tensor | None = None) -> torch.Tensor:
        h_t = self.text_features(bow) if h_t is None else h_t
        return F.relu(self.gt1(self.drop((h_t - self.text_mean) / self.text_std)))

    def classifiers(self) -> torch.Tensor:
        if self.gnn is None:
            return self.linear_classifier
        return self.gnn(self.label_embeddings, self.adjacency)

    @staticmethod
    def scores(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Eq. 5: cos(x_i, z_j)."""
        return F.normalize(x, dim=1, eps=1e-8) @ F.normalize(z, dim=1, eps=1e-8).T

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_text_mlp:
            self.text_mlp.eval()  # a frozen MLP keeps its dropout off
        return self

    def forward(self, x_v: torch.Tensor, bow: torch.Tensor, h_t: torch.Tensor | None = None) -> dict:
        """``x_v``: cached features or trunk maps. ``h_t`` may be passed precomputed (a frozen text MLP gives
        the same h_t every epoch)."""
        h_t = self.text_features(bow) if h_t is None else h_t
        h_v = self.image_features(x_v)
        v = self._common_of_features(h_v)
        t = self.text_common(bow, h_t)
        z = self.classifiers()
        out = {"v": v, "t": t, "h_v": h_v, "h_t": h_t, "z": z,
               "scores_v": self.scores(v, z), "scores_t": self.scores(t, z), "adv": []}
        if self.gv2 is not None:
            out["r_t"] = self.gv2(v)
            out["r_v"] = self.gt2(t)
            out["adv"] = [(self.disc_v(h_v), IMAGE), (self.disc_v(out["r_v"]), TEXT),
                          (self.disc_t(out["r_t"]), IMAGE), (self.disc_t(h_t), TEXT)]
        elif self.disc_common is not None:
            out["adv"] = [(self.disc_common(v), IMAGE), (self.disc_common(t), TEXT)]
        return out

    # -- statistics for input standardisation ----------------------------------------------------------
    @torch.no_grad()
    def set_input_statistics(self, image_features: torch.Tensor, text_features: torch.Tensor,
                             standardize_inputs: bool = True) -> None:
        """z-score statistics of the training h_v and h_t: always used to scale the discriminators' inputs,
        and for Gv1/Gt1 inputs when ``standardize_inputs``."""
        stats = [(f.mean(0), f.std(0).clamp_min(1e-3)) for f in (image_features, text_features)]
        if standardize_inputs:
            for (mean, std), (buf_mean, buf_std) in zip(stats, ((self.image_mean, self.image_std),
                                                                 (self.text_mean, self.text_std))):
                buf_mean.copy_(mean)
                buf_std.copy_(std)
        if self.disc_v is not None:
            for (mean, std), disc in zip(stats, (self.disc_v, self.disc_t)):
                disc.mean.copy_(mean)
                disc.std.copy_(std)

def build_model(config, feature_dim: int, vocab_size: int, label_embeddings, adjacency) -> DAGNN:
    """Build DAGNN from a TrainConfig or its dict (as stored in a run's config.json)."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    cfg.validate()
    return DAGNN(cfg, int(feature_dim), int(vocab_size), label_embeddings, adjacency)
