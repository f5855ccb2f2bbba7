"""Readers for the feature files cross-modal retrieval papers ship, and for label word vectors.

Two ``.mat`` layouts are common for MIRFlickr-25K, NUS-WIDE and MS-COCO:

* GNN4CMR layout — a folder with ``{train,test}_{img,txt,lab}.mat``; each file holds one variable named
  like the file stem (``train_img.mat`` → ``train_img``): image features, bag-of-words (or other text
  features) and 0/1 labels, one row per pair.
* DCMH layout — one or several ``.mat`` files holding ``IAll`` (raw images ``N×S×S×3`` in any axis order,
  or an ``N×d`` feature matrix; ``XAll`` is accepted as the feature name too), ``YAll`` (bag-of-words) and
  ``LAll`` (labels) over the whole collection, without a split.

:func:`load_mat_dataset` returns a :class:`MatDataset`: per split, arrays whose row *i* is the same pair
(image features or raw images, bag-of-words, labels). ``dagnn data import`` (``mat_import``) turns it into
what the trainer reads: a data set folder, plus a feature cache when the files hold features; raw images
become the folder's photos, which ``dagnn features`` then encodes like any other.
A DCMH file has no split (``"all"``); the protocol of the literature draws 2,000 test pairs at random.

MATLAB v7.3 files are HDF5, which scipy cannot read: re-save them in MATLAB with ``save(f, '-v7')``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

GNN4CMR_FILES = {"img": "features", "txt": "bow", "lab": "labels"}


@dataclass
class MatSplit:
    name: str                       # "train", "test" or "all"
    bow: np.ndarray                 # float32 (n, dt) text features (bag-of-words)
    labels: np.ndarray              # float32 (n, c) 0/1
    features: np.ndarray | None = None   # float32 (n, dv) image features, or
    images: np.ndarray | None = None     # uint8 (n, S, S, 3) RGB when the file ships pixels

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class MatDataset:
    layout: str                     # "gnn4cmr" or "dcmh"
    splits: dict[str, MatSplit]
    files: list[Path] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return next(iter(self.splits.values())).labels.shape[1]

    @property
    def vocab_size(self) -> int:
        return next(iter(self.splits.values())).bow.shape[1]


def _loadmat(path: Path, names=None) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        data = loadmat(str(path), variable_names=names)
    except NotImplementedError as exc:  # scipy's answer to v7.3 files
        raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file, which cannot be read here; re-save it in "
                        f"MATLAB with save(file, ..., '-v7') or export its arrays to .npy") from exc
    except Exception as exc:  # noqa: BLE001 - scipy raises assorted errors on non-MAT input
        raise DataError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    return {k: v for k, v in data.items() if not k.startswith("__")}


def _rows_first(array: np.ndarray, path: Path, n: int, what: str) -> np.ndarray:
    """Matrices saved from MATLAB sometimes come as (d, n); put the n pairs on the first axis."""
    if array.ndim != 2:
        raise DataError(f"{path}: {what} should be a 2-D matrix, got shape {array.shape}")
    if array.shape[0] == n:
        return array
    if array.shape[1] == n:
        return array.T
    raise DataError(f"{path}: {what} has shape {array.shape}, expected {n} rows (one per pair)")


def _as_images(array: np.ndarray, n: int, path: Path) -> np.ndarray:
    """4-D uint8 image stack in any axis order (MATLAB S×S×3×N, h5py N×3×S×S…) → (N, S, S, 3)."""
    if array.dtype != np.uint8:
        raise DataError(f"{path}: IAll holds 4-D {array.dtype} data; expected uint8 RGB images")
    axes = list(range(4))
    n_axis = next((a for a in (0, 3) if array.shape[a] == n), None)
    if n_axis is None:
        raise DataError(f"{path}: IAll has shape {array.shape}, none of its outer axes counts the {n} pairs")
    axes.remove(n_axis)
    c_axis = next((a for a in axes if array.shape[a] == 3), None)
    if c_axis is None:
        raise DataError(f"{path}: IAll has shape {array.shape}, no axis of 3 colour channels")
    axes.remove(c_axis)
    return np.ascontiguousarray(array.transpose(n_axis, *axes, c_axis))


def _pair_count(labels: np.ndarray, others, path: Path) -> int:
    """The number of pairs: the axis of the label matrix that the other arrays share (MATLAB files come
    both as n×d and d×n)."""
    if labels.ndim != 2:
        raise DataError(f"{path}: labels should be a 2-D 0/1 matrix, got shape {labels.shape}")
    for n in labels.shape:
        if all(n in other.shape for other in others):
            return n
    raise DataError(f"{path}: labels of shape {labels.shape} share no pair count with the other arrays "
                    f"{[other.shape for other in others]}")


def _labels(array: np.ndarray, path: Path, n: int) -> np.ndarray:
    labels = _rows_first(array, path, n=n, what="labels")
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"{path}: labels must be 0/1, found values {np.unique(labels)[:5]}")
    return labels.astype(np.float32)


def load_gnn4cmr(folder) -> MatDataset:
    folder = Path(folder)
    splits, files = {}, []
    for split in ("train", "test"):
        arrays, paths = {}, {}
        for suffix, field_name in GNN4CMR_FILES.items():
            path = folder / f"{split}_{suffix}.mat"
            data = _loadmat(path)
            if path.stem not in data:
                raise DataError(f"{path}: expected a variable named {path.stem!r}, found {sorted(data)}")
            arrays[field_name], paths[field_name] = data[path.stem], path
            files.append(path)
        n = _pair_count(arrays["labels"], [arrays["features"], arrays["bow"]], paths["labels"])
        splits[split] = MatSplit(
            split,
            bow=_rows_first(arrays["bow"], paths["bow"], n=n, what="text features").astype(np.float32),
            labels=_labels(arrays["labels"], paths["labels"], n=n),
            features=_rows_first(arrays["features"], paths["features"], n=n, what="image features").astype(np.float32),
        )
    _check_same_columns(splits, folder)
    return MatDataset("gnn4cmr", splits, files)


def load_dcmh(paths) -> MatDataset:
    from scipy.io import whosmat

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    found: dict[str, tuple[np.ndarray, Path]] = {}
    for path in paths:
        if not path.is_file():
            raise DataError(f"missing file {path}")
        try:
            names = [name for name, _, _ in whosmat(str(path))]
        except NotImplementedError:
            names = None  # v7.3: let _loadmat raise its clear message
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
        wanted = None if names is None else [k for k in ("IAll", "XAll", "YAll", "LAll") if k in names]
        if wanted == []:
            continue
        for key, value in _loadmat(path, wanted).items():
            if key in found:
                raise DataError(f"{key} appears in both {found[key][1]} and {path}")
            found[key] = (value, path)
    missing = [k for k in ("YAll", "LAll") if k not in found]
    if "IAll" not in found and "XAll" not in found:
        missing.insert(0, "IAll")
    if missing:
        raise DataError(f"DCMH layout: {', '.join(missing)} not found in {', '.join(map(str, paths))}")
    image, image_path = found["IAll"] if "IAll" in found else found["XAll"]
    n = _pair_count(found["LAll"][0], [found["YAll"][0], image], found["LAll"][1])
    labels = _labels(*found["LAll"], n=n)
    bow = _rows_first(*found["YAll"], n=n, what="YAll").astype(np.float32)
    if image.ndim == 4:
        split = MatSplit("all", bow, labels, images=_as_images(image, n, image_path))
    else:
        split = MatSplit("all", bow, labels,
                         features=_rows_first(image, image_path, n=n, what="image features").astype(np.float32))
    return MatDataset("dcmh", {"all": split}, sorted({p for _, p in found.values()}))


def load_mat_dataset(path) -> MatDataset:
    """A GNN4CMR folder, a DCMH ``.mat`` file, or a folder of DCMH ``.mat`` files."""
    path = Path(path)
    if path.is_dir():
        if (path / "train_img.mat").is_file():
            return load_gnn4cmr(path)
        mats = sorted(path.glob("*.mat"))
        if not mats:
            raise DataError(f"{path}: no .mat files (expected train_img.mat… or files with IAll/YAll/LAll)")
        return load_dcmh(mats)
    if path.is_file():
        return load_dcmh([path])
    raise DataError(f"{path} does not exist")


def _check_same_columns(splits: dict[str, MatSplit], where: Path) -> None:
    first = next(iter(splits.values()))
    for split in splits.values():
        for what in ("features", "bow", "labels"):
            a, b = getattr(first, what), getattr(split, what)
            if a.shape[1] != b.shape[1]:
                raise DataError(f"{where}: {what} has {a.shape[1]} columns in {first.name} "
                                f"but {b.shape[1]} in {split.name}")


# ---------------------------------------------------------------------------------------- label embeddings

_WORD_SPLIT = re.compile(r"[_\-\s]+")


def _label_words(label: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(label.lower()) if w]


def load_label_embeddings(path, labels: list[str]) -> np.ndarray:
    """Label word vectors, float32 ``(len(labels), d)`` in ``labels`` order.

    ``.npy``: one row per label, already in ``labels.txt`` order. Otherwise a GloVe/word2vec text file
    (``word v1 … vd`` per line, an optional ``count dim`` header): a label's vector is the mean of its
    words' vectors (``plant_life`` → mean of "plant" and "life"); labels none of whose words are in the file
    are an error that names them.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label embeddings file {path} does not exist")
    if path.suffix == ".npy":
        try:
            emb = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: cannot read a .npy array ({exc})") from exc
        if emb.ndim != 2 or emb.shape[0] != len(labels):
            raise DataError(f"{path}: shape {emb.shape}, expected ({len(labels)}, d): one row per label "
                            f"in labels.txt order")
        if not np.issubdtype(emb.dtype, np.number) or not np.isfinite(emb).all():
            raise DataError(f"{path}: label embeddings must be finite numbers")
        return emb.astype(np.float32)
    return _load_text_vectors(path, labels)


def _load_text_vectors(path: Path, labels: list[str]) -> np.ndarray:
    words = {w for label in labels for w in _label_words(label)}
    vectors: dict[str, np.ndarray] = {}
    dim = None
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip().split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec text header "count dim"
            if len(parts) < 2:
                continue
            if dim is None:
                dim = len(parts) - 1
            elif len(parts) - 1 != dim:
                raise DataError(f"{path}:{lineno}: {len(parts) - 1} values, expected {dim} like the first line")
            word = parts[0].lower()
            if word in words and word not in vectors:
                try:
                    vectors[word] = np.array(parts[1:], dtype=np.float32)
                except ValueError as exc:
                    raise DataError(f"{path}:{lineno}: not a word vector line ({exc})") from exc
    if dim is None:
        raise DataError(f"{path}: no word vectors found")
    unknown = [label for label in labels if not any(w in vectors for w in _label_words(label))]
    if unknown:
        raise DataError(f"{path}: no vector for any word of the labels {unknown}")
    return np.stack([np.mean([vectors[w] for w in _label_words(label) if w in vectors], axis=0)
                     for label in labels]).astype(np.float32)


def label_embeddings_or_onehot(path, labels: list[str]) -> np.ndarray:
    """The label word vectors of ``path``, or one-hot vectors (identity) when no file is given."""
    if path is None:
        log.warning("no label embeddings given: using one-hot label inputs (the paper uses GloVe vectors; "
                    "pass a .npy or GloVe text file for its results)")
        return np.eye(len(labels), dtype=np.float32)
    return load_label_embeddings(path, labels)
