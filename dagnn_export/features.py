"""Backbone feature cache: run the image backbone once over a data set and keep the vectors in an ``.npz``.

This differs from the paper. There, ImgGAN starts from raw images and its VGG19 (ImageNet-pretrained,
4096-d fc7) is part of the trained model: θcnn is in θv (Eq. 1), trained end to end. Here the backbone is
frozen (by default EfficientNet-Lite0, 1280-d, on the data set's 128-px photos upscaled to 224) and only
Gv1 onwards is trained, which is what makes training on a small CPU feasible; so the features are computed
once, here. For ``--finetune-backbone`` the cache holds the frozen trunk's activation maps instead
(``trunk_blocks``), optionally also those of each photo mirrored (``flipped``); see ``backbone_split``.
The cache is keyed by the SHA-256 of each image file: a rerun only computes rows whose file changed, and an
interrupted run resumes from ``OUT.partial`` (written every minute), never leaving a half-written ``OUT``.

Inference runs the backbone exported to ONNX under onnxruntime, which on a small CPU is several times
faster than eager PyTorch for these convnets; the outputs agree with the torch module to ~1e-5 (the same
graph the bundle serves). Decoding the next batch overlaps with inference (``preprocess.iter_pixels``).
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dagnn_runtime.atomic import atomic_write
from dagnn_runtime.digests import file_sha256
from dagnn_runtime.dataset import Dataset
from dagnn_runtime.errors import positive_int
from dagnn_runtime.preprocess import iter_pixels

from .errors import FeatureError
from .progress import Progress

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 60.0
_KEYS = ("rows", "features", "sha256", "backbone", "image_size")


@dataclass
class FeatureCache:
    path: Path
    rows: np.ndarray        # int64 (n,)
    features: np.ndarray    # float32 (n, dv)
    sha256: np.ndarray      # str (n,)
    backbone: str
    image_size: int
    weights: str = ""       # identity of the backbone weights ("" = the backbone's default)
    trunk_blocks: int = 0   # 0: pooled features; D: the trunk's maps before the backbone's last D blocks
    flipped: np.ndarray | None = None  # the same of each photo mirrored left-right (augmentation), or None

    def __post_init__(self):
        self._index = {int(r): i for i, r in enumerate(self.rows)}

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def lookup(self, rows, flipped: bool = False) -> np.ndarray:
        """Features of the given data set rows, float32 ``(len(rows), dv)``, in that order (``flipped``: of
        the mirrored photos)."""
        rows = [int(r) for r in np.asarray(rows).reshape(-1)]
        missing = [r for r in rows if r not in self._index]
        if missing:
            raise FeatureError(f"{self.path}: no features for {len(missing)} rows, e.g. {missing[:10]} "
                               f"(rerun `dagnn features` on the data set to add them)")
        if flipped and self.flipped is None:
            raise FeatureError(f"{self.path} holds no mirrored photos' features (make it with --flip)")
        return (self.flipped if flipped else self.features)[[self._index[r] for r in rows]]


def load_features(path) -> FeatureCache:
    path = Path(path)
    if not path.is_file():
        raise FeatureError(f"feature cache {path} does not exist (create it with `dagnn features`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise FeatureError(f"{path}: not a dagnn feature cache (missing {missing})")
            data = {k: z[k] for k in z.files}
    except FeatureError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickled arrays, not an npz...
        raise FeatureError(f"{path}: cannot read the feature cache ({exc})") from exc
    rows, feats, sha = data["rows"], data["features"], data["sha256"]
    flipped = data.get("flipped")
    if (feats.ndim != 2 or rows.shape != (feats.shape[0],) or sha.shape != rows.shape
            or (flipped is not None and flipped.shape != feats.shape)):
        raise FeatureError(f"{path}: inconsistent shapes rows {rows.shape}, features {feats.shape}, "
                           f"sha256 {sha.shape}, flipped {None if flipped is None else flipped.shape}")
    return FeatureCache(path, rows.astype(np.int64), feats.astype(np.float32, copy=False), sha.astype(str),
                        str(data["backbone"]), int(data["image_size"]),
                        str(data["weights"]) if "weights" in data else "",
                        int(data["trunk_blocks"]) if "trunk_blocks" in data else 0,
                        None if flipped is None else flipped.astype(np.float32, copy=False))


def _write_npz(path: Path, **arrays) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare path
            np.savez(f, **arrays)

    atomic_write(path, write)


def write_feature_cache(path: Path, rows, features, sha, backbone: str, image_size: int, weights: str,
                        dim: int, trunk_blocks: int = 0, flipped=None) -> None:
    """Write a feature cache atomically; ``sha`` holds, per row, the digest of what the features were made from."""
    extra = {} if flipped is None else {"flipped": np.asarray(flipped, dtype=np.float32).reshape(len(rows), dim)}
    _write_npz(path, rows=np.asarray(rows, dtype=np.int64),
               features=np.asarray(features, dtype=np.float32).reshape(len(rows), dim),
               sha256=np.asarray(sha, dtype="<U64"), backbone=np.array(backbone),
               image_size=np.array(image_size, dtype=np.int64), weights=np.array(weights),
               trunk_blocks=np.array(trunk_blocks, dtype=np.int64), **extra)


def _weights_id(weights) -> str:
    if weights is None:
        return ""
    path = Path(weights)
    if not path.is_file():
        raise FeatureError(f"backbone weights file {path} does not exist")
    return file_sha256(path)


def _make_encoder(backbone, threads: int | None):
    """uint8 (n, S, S, 3) → float32 (n, dv) through onnxruntime (see the module docstring for why)."""
    import onnxruntime as ort

    from .backbones import export_onnx

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(backbone, Path(tmp) / "backbone.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(pixels: np.ndarray) -> np.ndarray:
        return session.run(["features"], {"pixels": pixels})[0]

    return encode


def _reusable(paths, identity: tuple, flip: bool) -> dict[str, np.ndarray]:
    """sha256 → feature vector (with ``flip``: its rows of the photo and of the mirrored photo) from earlier
    complete or partial caches made the same way."""
    known: dict[str, np.ndarray] = {}
    for path in paths:
        if not path.is_file():
            continue
        try:
            old = load_features(path)
        except FeatureError:
            continue  # an unreadable old cache is simply recomputed
        if (old.backbone, old.image_size, old.weights, old.trunk_blocks) != identity:
            continue
        if flip and old.flipped is not None:
            known.update(zip(old.sha256.tolist(), np.stack([old.features, old.flipped], axis=1)))
        elif not flip:
            known.update(zip(old.sha256.tolist(), old.features))
    return known


def extract_features(dataset_dir, backbone_name: str, out_path, weights=None, batch_size: int = 32,
                     progress: bool = True, threads: int | None = None,
                     log: Callable[[str], None] | None = None, *, trunk_blocks: int = 0, flip: bool = False,
                     image_size: int | None = None) -> Path:
    """Compute (or update) the feature cache of every pair with an image in the data set folder.
    ``progress``: show a bar (or a line every 30 s through ``log`` off a terminal) and a summary.
    ``trunk_blocks`` D > 0 caches the trunk's activation maps before the backbone's last D blocks (for
    ``--finetune-backbone``); ``flip`` also caches them for each photo mirrored left-right, an augmentation
    that stays exact with cached maps; ``image_size`` overrides the backbone's input side (e.g. 128, native)."""
    from .backbones import build_backbone

    if batch_size < 1:
        raise FeatureError(f"batch size must be positive, got {batch_size}")
    dataset = Dataset.load(dataset_dir)
    out = Path(out_path)
    if not out.parent.is_dir():
        raise FeatureError(f"output folder {out.parent} does not exist")
    partial = out.with_name(out.name + ".partial")
    weights_id = _weights_id(weights)

    items = [(p.row, dataset.root / p.image) for p in dataset.pairs if p.image is not None]
    if not items:
        raise FeatureError(f"{dataset.root}: no pair has an image")
    for row, path in items:
        if not path.is_file():
            raise FeatureError(f"row {row}: image file {path} does not exist")
    shas = [file_sha256(path) for _, path in items]

    backbone = build_backbone(backbone_name, weights)
    if image_size is not None:
        backbone.image_size = positive_int(image_size, "image size")
    if trunk_blocks:
        from .backbone_split import split_backbone

        backbone = split_backbone(backbone, trunk_blocks)[0]
    size, dim = backbone.image_size, backbone.feature_dim
    known = _reusable((out, partial), (backbone.name, size, weights_id, trunk_blocks), flip)
    todo, seen = [], set(known)
    for (row, path), sha in zip(items, shas):
        if sha not in seen:
            seen.add(sha)
            todo.append((row, path, sha))

    def snapshot(target: Path) -> None:
        done = [(row, sha) for (row, _), sha in zip(items, shas) if sha in known]
        feats = np.stack([known[sha] for _, sha in done]) if done else np.zeros((0, 2, dim) if flip else (0, dim),
                                                                                 np.float32)
        write_feature_cache(target, [r for r, _ in done], feats[:, 0] if flip else feats, [s for _, s in done],
                            backbone.name, size, weights_id, dim, trunk_blocks, feats[:, 1] if flip else None)

    encode = _make_encoder(backbone, threads) if todo else None
    log = log or logger.info
    bar = Progress(len(todo), f"{backbone.name} {'trunk maps' if trunk_blocks else 'features'}", progress, log=log)
    if todo:
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        decoded = iter_pixels([path for _, path, _ in todo], size, batch_size)
        last_save = time.monotonic()
        for batch, (_, pixels, errors) in zip(batches, decoded):
            if errors:
                bar.close()
                snapshot(partial)  # keep what was computed: the rerun after fixing the file resumes
                exc = errors[0][1]
                raise FeatureError(f"cannot use an image of data set {dataset.root}: {exc}") from exc
            feats = encode(pixels)
            if flip:
                feats = np.stack([feats, encode(np.ascontiguousarray(pixels[:, :, ::-1]))], axis=1)
            if feats.shape[::2 if flip else 1] != (len(batch), dim) or not np.isfinite(feats).all():
                bar.close()
                raise FeatureError(f"{backbone.name} returned bad features {feats.shape} for rows "
                                   f"{[row for row, _, _ in batch][:5]}...")
            known.update(zip((sha for _, _, sha in batch), feats.astype(np.float32)))
            bar.advance(len(batch))
            if time.monotonic() - last_save >= CHECKPOINT_SECONDS:
                snapshot(partial)
                last_save = time.monotonic()
    bar.close()
    snapshot(out)
    partial.unlink(missing_ok=True)
    if progress:
        rate = f" at {bar.rate():.1f} img/s" if todo else ""
        log(f"{out}: {len(items)} rows, {len(todo)} computed{rate}, {len(items) - len(todo)} reused or duplicate")
    return out


def pool_trunk_cache(trunk_path, config: dict, out) -> None:
    """Write the pooled-feature cache that a trunk cache implies (its maps through the pretrained head):
    the frozen-feature first phase of a fine-tuning run trains on it without running the head every batch.
    Here, with the other cache writers, so that ``backbone_split`` (below this module) need not import it."""
    import torch

    from .backbone_split import build_head

    cache = load_features(trunk_path)
    head = build_head({**config, "trunk_blocks": cache.trunk_blocks, "finetune_backbone": 0}, pretrained=True)
    with torch.no_grad():
        pooled = torch.cat([head(torch.from_numpy(chunk)) for chunk in np.array_split(
            cache.features, max(1, len(cache.features) // 512))]).numpy()
    write_feature_cache(out, cache.rows, pooled, cache.sha256, cache.backbone, cache.image_size, cache.weights,
                        pooled.shape[1])
