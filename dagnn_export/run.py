"""A training run's data and its directory: the split tensors training and evaluation share, and the
loader of a finished run directory (``dagnn train --out RUN``).

Kept apart from ``train`` and ``evaluate`` so that both import it and neither imports the other's caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dagnn_runtime.dataset import Dataset, Splits
from dagnn_runtime.errors import InputError

from .config import TrainConfig
from .errors import RunError
from .files import read_json
from .model import DAGNN, build_model

RUN_FILES = ("config.json", "model.pt", "metrics.json", "history.json", "splits.json", "label_graph.json",
             "labels.txt", "vocab.txt")


@dataclass
class Part:
    """One split as tensors: image features or trunk maps (None for text-only pairs), bag of words, labels,
    row ids; ``h_v_flipped``: the same of the mirrored photos, when the cache has them (training only)."""
    rows: list
    h_v: torch.Tensor | None
    bow: torch.Tensor
    y: torch.Tensor
    h_v_flipped: torch.Tensor | None = None


@dataclass
class TrainingData:
    dataset: Dataset
    splits: Splits | None
    train: Part | None
    val: Part
    test: Part | None
    text_only: Part | None
    label_embeddings: np.ndarray | None
    backbone: str | None
    image_size: int | None
    trunk_blocks: int = 0


def make_part(dataset: Dataset, idx, cache=None, flipped: bool = False) -> Part:
    """The pairs at positions ``idx`` as tensors; image features from ``cache`` (None: text only), with
    ``flipped`` also those of the mirrored photos when the cache holds them."""
    rows = [dataset.pairs[i].row for i in idx]

    def features(mirrored: bool):
        return torch.from_numpy(np.ascontiguousarray(cache.lookup(rows, mirrored), dtype=np.float32))

    h_v = None if cache is None else features(False)
    h_v_flipped = features(True) if flipped and cache is not None and cache.flipped is not None else None
    return Part(rows, h_v, torch.from_numpy(dataset.bow(idx)), torch.from_numpy(dataset.label_matrix(idx)),
                h_v_flipped)


def fewer_training_pairs(splits: Splits, fraction: float, seed: int) -> Splits:
    """The same validation and test pairs, and a random ``fraction`` of the training image pairs and of the
    text-only pairs: fewer labelled examples, everything else equal (the scarce-label regime)."""
    rng = np.random.default_rng(seed)

    def keep(idx):
        return np.sort(rng.choice(idx, size=max(2, round(fraction * len(idx))), replace=False)) if len(idx) else idx

    return Splits(keep(splits.train), splits.val, splits.test, keep(splits.text_only))


def load_training_data(cfg: TrainConfig) -> TrainingData:
    from .data import label_embeddings_or_onehot
    from .features import load_features

    if cfg.data is None or cfg.features is None:
        raise InputError("the config needs both 'data' (data set folder) and 'features' (feature cache)")
    dataset = Dataset.load(cfg.data)
    splits = dataset.splits(seed=cfg.split_seed, val_fraction=cfg.val_fraction)
    if cfg.train_fraction < 1:
        splits = fewer_training_pairs(splits, cfg.train_fraction, cfg.split_seed)
    cache = load_features(cfg.features)
    if len(splits.train) < 2 or len(splits.val) < 1:
        raise InputError(f"{cfg.data}: too few image pairs to train ({len(splits.train)} train, {len(splits.val)} val)")
    train = make_part(dataset, splits.train, cache, flipped=cfg.flip and cfg.finetune_backbone > 0)
    return TrainingData(dataset, splits, train, make_part(dataset, splits.val, cache),
                        make_part(dataset, splits.test, cache), make_part(dataset, splits.text_only),
                        label_embeddings_or_onehot(cfg.label_embeddings, dataset.labels),
                        cache.backbone, cache.image_size, cache.trunk_blocks)


def load_run(run_dir) -> tuple[DAGNN, dict]:
    """The best-validation model of a run directory (eval mode, CPU) and its resolved config dict."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    for name in ("config.json", "model.pt"):
        if not (run_dir / name).is_file():
            raise RunError(f"run directory {run_dir} has no {name}")
    config = read_json(run_dir / "config.json", RunError)
    for key in ("feature_dim", "vocab_size"):
        if not config.get(key):
            raise RunError(f"{run_dir / 'config.json'} lacks {key!r}")
    _, state = _run_state(run_dir)
    if not isinstance(state, dict):
        raise RunError(f"{run_dir / 'model.pt'}: expected a state_dict, got {type(state).__name__}")
    for key in ("label_embeddings", "adjacency"):
        if key not in state:
            raise RunError(f"{run_dir / 'model.pt'} has no {key!r} buffer: not a DAGNN state_dict")
    model = build_model(config, config["feature_dim"], config["vocab_size"], state["label_embeddings"],
                        state["adjacency"])
    model.load_state_dict(state)
    model.eval()
    return model, config


def _run_state(source) -> tuple[Path, dict]:
    path = Path(source)
    path = path / "model.pt" if path.is_dir() else path
    if not path.is_file():
        raise RunError(f"{source} has no model.pt")
    try:
        return path, torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated file, pickled objects...
        raise RunError(f"{path}: cannot read the weights ({exc})") from exc


def load_initial_weights(model: DAGNN, source) -> None:
    """Start from a run trained on frozen features (its directory or model.pt): everything but the backbone
    head, which keeps its pretrained weights, so fine-tuning begins where that run ended."""
    path, state = _run_state(source)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise RunError(f"{path}: not a run of the same model shape ({str(exc).splitlines()[-1].strip()})") from exc
    missing = [k for k in result.missing_keys if not k.startswith("image_head.")]
    if missing or result.unexpected_keys:
        raise RunError(f"{path}: not a run of the same model (missing {missing[:4]}, unexpected "
                       f"{result.unexpected_keys[:4]})")


def load_text_mlp(model: DAGNN, source) -> None:
    """Start from the text MLP of another run (its directory or model.pt), e.g. to reuse one pretraining."""
    path, state = _run_state(source)
    sub = {k[len("text_mlp."):]: v for k, v in state.items() if k.startswith("text_mlp.")}
    own = model.text_mlp.state_dict()
    if set(sub) != set(own) or any(sub[k].shape != own[k].shape for k in own):
        raise RunError(f"{path}: no text MLP of the same shape (vocabulary {own['fc1.weight'].shape[1]}, "
                       f"{own['head.weight'].shape[0]} labels) in it")
    model.text_mlp.load_state_dict(sub)
    model.text_mlp.eval()
