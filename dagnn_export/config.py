"""Training configuration: one dataclass holding every hyper-parameter, presets per data set, variants.

Variants of the paper's ablation (Table 2) are switches on the same model, not separate code paths:
``dagnn-1`` drops L_cla, ``dagnn-2`` drops L_mdi, ``dagnn-3`` drops L_adv, ``dagnn-4`` replaces the dual
cross-reconstruction GANs by one discriminator on the common representations, ``dagnn-5`` replaces the
multi-hop GNN by a learned linear (cosine) classifier.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dagnn_runtime.errors import InputError

VARIANTS = ("dagnn", "dagnn-1", "dagnn-2", "dagnn-3", "dagnn-4", "dagnn-5")
GNN_KINDS = ("gat", "gcn")
GRAPH_DIRECTIONS = ("given", "transposed")

# Defaults of the GAT/GCN correlation-matrix threshold (paper: tau=0.3 GAT, tau=0.4 & p=0.5 GCN).
DEFAULT_TAU = {"gat": 0.3, "gcn": 0.4}


@dataclass
class TrainConfig:
    # data and inputs
    data: str | None = None
    features: str | None = None
    backbone: str | None = None
    backbone_weights: str | None = None
    image_size: int | None = None
    label_embeddings: str | None = None
    preset: str = "mirflickr"
    variant: str = "dagnn"
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.1
    train_fraction: float = 1.0       # < 1: keep only this share of the training pairs (scarce-label studies)
    # architecture (paper's Implementation Details)
    common_dim: int = 1024
    text_hidden: int = 4096
    text_dim: int = 300
    gv2_hidden: int = 512
    gt2_hidden: int = 2048
    disc_hidden: int = 512
    gnn: str = "gat"
    gnn_layers: int = 4
    layer_aggregation: bool = True
    tau: float | None = None          # None: DEFAULT_TAU[gnn]
    p: float = 0.5
    # Which way the graph's edges point (the paper leaves it open): "given" lets label i aggregate from j
    # when P(L_i|L_j) >= tau (B and A as in Eq. 6-8); "transposed" when P(L_j|L_i) >= tau (B^T, A^T).
    graph_direction: str = "given"
    dropout: float = 0.0              # on the z-scored inputs of Gv1/Gt1 (h_v, h_t) during training
    standardize_inputs: bool = True   # z-score h_v and h_t with training statistics before Gv1/Gt1
    # objective (Eq. 9-12) and its ablation switches (set by ``variant``)
    alpha: float = 0.2
    beta: float = 0.2
    use_cla: bool = True
    use_mdi: bool = True
    use_adv: bool = True
    adversary: str = "dual"           # "dual" (cross-reconstruction GANs) | "common" (DAGNN-4)
    classifier: str = "gnn"           # "gnn" | "linear" (DAGNN-5)
    # optimisation
    lr: float = 5e-5
    adam_beta1: float = 0.5
    weight_decay: float = 0.0
    batch_size: int = 100
    epochs: int = 60
    patience: int = 12
    # text MLP pretraining (label classification on training text incl. text-only pairs)
    text_pretrain_epochs: int = 30
    text_pretrain_lr: float = 1e-3
    text_pretrain_batch: int = 256
    text_pretrain_patience: int = 3
    text_dropout: float = 0.5
    freeze_text_mlp: bool = True
    text_only_in_training: bool = False  # also apply L_cla to text-only pairs during joint training
    text_mlp_init: str | None = None  # run dir or model.pt whose text MLP to start from (skips pretraining)
    num_threads: int = 0              # 0: auto (see train.pick_threads)
    # fine-tuning the backbone's last blocks on cached trunk maps (backbone_split); needs a trunk cache
    finetune_backbone: int = 0        # k: train the backbone's last k blocks and its head convolution
    backbone_lr: float = 2e-5         # Adam learning rate of those pretrained blocks
    finetune_epochs: int = 3          # without init_from: epochs of phase 2, after a frozen-feature phase 1
    flip: bool = True                 # train on the mirrored photo's maps half of the time, when cached
    init_from: str | None = None      # run dir or model.pt whose DAGNN weights to start from (frozen features)
    # filled in by training
    feature_dim: int | None = None    # of the cache: pooled features, or the flattened trunk maps
    trunk_blocks: int = 0             # the cache's: trunk maps before the backbone's last D blocks (0: pooled)
    vocab_size: int | None = None
    num_labels: int | None = None

    def resolved_tau(self) -> float:
        return DEFAULT_TAU[self.gnn] if self.tau is None else float(self.tau)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        # Run directories written before the free-form "extra" field was dropped still carry it; it never
        # influenced training, so such runs stay loadable.
        d = {k: v for k, v in d.items() if k != "extra"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown config keys: {unknown}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(f"unknown variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        if self.gnn not in GNN_KINDS:
            raise InputError(f"unknown gnn {self.gnn!r}; choose gat or gcn")
        if self.gnn_layers < 1:
            raise InputError(f"gnn_layers must be >= 1, got {self.gnn_layers}")
        if self.graph_direction not in GRAPH_DIRECTIONS:
            raise InputError(f"graph_direction must be one of {', '.join(GRAPH_DIRECTIONS)}, "
                             f"got {self.graph_direction!r}")
        if self.adversary not in ("dual", "common"):
            raise InputError(f"adversary must be 'dual' or 'common', got {self.adversary!r}")
        if self.classifier not in ("gnn", "linear"):
            raise InputError(f"classifier must be 'gnn' or 'linear', got {self.classifier!r}")
        if not (self.use_cla or self.use_mdi):
            raise InputError("at least one of L_cla and L_mdi must be on (L_adv alone learns nothing to retrieve)")
        if not 0 < self.train_fraction <= 1:
            raise InputError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.finetune_backbone < 0 or self.trunk_blocks < 0:
            raise InputError("finetune_backbone and trunk_blocks must be >= 0")
        if self.batch_size < 2 or self.epochs < 1:
            raise InputError("batch_size must be >= 2 and epochs >= 1")


PRESETS: dict[str, dict] = {
    # lr and dropout chosen on MIRFlickr validation mAP (docs/training.md); the paper uses lr 5e-5. The
    # backbone (for features extracted on the fly; a --features cache brings its own) is the one validation
    # chose among Lite0, Lite1, Lite2 and Lite0+Lite2 (docs/results.md, backbone study): 3.2x Lite0's cost.
    "mirflickr": {"batch_size": 100, "gnn": "gat", "gnn_layers": 4, "lr": 2e-4, "dropout": 0.3,
                  "epochs": 40, "patience": 8, "backbone": "efficientnet_lite0+efficientnet_lite2"},
    "nuswide": {"batch_size": 1024, "gnn": "gat", "gnn_layers": 5},
}
# The best fine-tuning on MIRFlickr validation (docs/results.md, fine-tuning table): the mirflickr preset on
# Lite0, then its last 3 blocks trained with DAGNN for 3 epochs. Needs trunk maps, not pooled features. A
# fused backbone does not come apart for fine-tuning, so this preset stays on Lite0 (measured there).
PRESETS["mirflickr-finetune"] = {**PRESETS["mirflickr"], "backbone": "efficientnet_lite0", "finetune_backbone": 3,
                                 "finetune_epochs": 3, "backbone_lr": 2e-5}

VARIANT_SWITCHES: dict[str, dict] = {
    "dagnn": {},
    "dagnn-1": {"use_cla": False},
    "dagnn-2": {"use_mdi": False},
    "dagnn-3": {"use_adv": False},
    "dagnn-4": {"adversary": "common"},
    "dagnn-5": {"classifier": "linear"},
}


def make_config(preset: str = "mirflickr", variant: str = "dagnn", **overrides) -> TrainConfig:
    """Preset values, then the variant's switches, then explicit overrides (``None`` means 'not given')."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if variant not in VARIANT_SWITCHES:
        raise InputError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    values = {"preset": preset, "variant": variant, **PRESETS[preset], **VARIANT_SWITCHES[variant]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)


def parse_override(cfg_fields: dict, text: str) -> tuple[str, object]:
    """Parse ``key=value`` against the dataclass field types (for ``--set``)."""
    if "=" not in text:
        raise InputError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if key not in cfg_fields:
        raise InputError(f"--set: unknown config key {key!r}")
    default = cfg_fields[key]
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return key, None
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise InputError(f"--set {key}: expected true/false, got {raw!r}")
        return key, raw.lower() in ("true", "1", "yes")
    try:
        if isinstance(default, int):
            return key, int(raw)
        if isinstance(default, float) or key == "tau":
            return key, float(raw)
    except ValueError:
        raise InputError(f"--set {key}: expected a number, got {raw[:80]!r}") from None
    return key, raw


def default_values() -> dict:
    return TrainConfig().to_dict()
