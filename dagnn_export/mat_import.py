"""``dagnn data import``: the ``.mat`` files papers ship (see ``data``) turned into what ``dagnn train`` reads.

- Files holding photos (DCMH ``IAll`` as pixels) become a complete data set folder: each photo a lossless
  PNG under ``images/``, so ``dagnn features``, ``train``, ``export`` and ``index`` all work on it.
- Files holding image features (GNN4CMR ``*_img.mat``, DCMH feature matrices) become a data set folder plus
  the feature cache ``features.npz``: ``dagnn train --features`` and ``dagnn_export.evaluate`` work on it,
  which is the feature-based protocol of the literature. There is no photo, so such a folder cannot be
  exported to a bundle; each pair's ``image`` names the ``.mat`` row its features came from.

``.mat`` files carry no label or tag names: ``labels`` / ``vocab`` files (one name per line, in column
order) supply them, otherwise they are ``label_00`` … and ``tag_0000`` …. GNN4CMR's test split is kept as
``split_gnn4cmr.json``; DCMH files have no split, so training draws 2,000 random test pairs as the
literature does.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from dagnn_runtime.atomic import replace_dir, temp_dir_beside
from dagnn_runtime.dataset import read_lines

from .data import MatDataset, load_dcmh, load_gnn4cmr
from .errors import DataError
from .features import write_feature_cache
from .files import write_lines

FORMATS = ("gnn4cmr", "dcmh")
FEATURES = "features.npz"


def read_mat(fmt: str, src) -> MatDataset:
    src = Path(src)
    if fmt == "gnn4cmr":
        if not src.is_dir():
            raise DataError(f"{src}: expected the GNN4CMR folder holding train_img.mat … test_lab.mat")
        return load_gnn4cmr(src)
    if fmt == "dcmh":
        files = sorted(src.glob("*.mat")) if src.is_dir() else [src]
        if not files:
            raise DataError(f"{src}: no .mat files")
        return load_dcmh(files)
    raise DataError(f"unknown format {fmt!r}; choose {' or '.join(FORMATS)}")


def _names(path, count: int, prefix: str, what: str) -> list[str]:
    if path is None:
        width = len(str(count - 1))
        return [f"{prefix}_{j:0{width}d}" for j in range(count)]
    names = read_lines(Path(path))
    if len(names) != count:
        raise DataError(f"{path}: {len(names)} {what} names, but the .mat files have {count} {what} columns")
    return names


def import_mat(fmt: str, src, out, *, labels=None, vocab=None, force: bool = False) -> dict:
    """Convert ``src`` (``fmt`` layout) into the data set folder ``out``, written whole or not at all.
    Returns a summary: pairs, photos written, feature cache path (or None), test rows fixed."""
    mat = read_mat(fmt, src)
    out = Path(out).absolute()
    if (out.exists() or out.is_symlink()) and not force:
        raise DataError(f"{out} already exists; pass --force to replace it")
    label_names = _names(labels, mat.num_labels, "label", "label")
    tag_names = _names(vocab, mat.vocab_size, "tag", "tag")
    for split in mat.splits.values():
        if not np.isin(split.bow, (0, 1)).all():
            raise DataError(f"{src}: the {split.name} text features are not a 0/1 bag of words (values such as "
                            f"{np.unique(split.bow)[:4].tolist()}); dagnn's text side reads tags")

    tmp = temp_dir_beside(out)
    try:
        summary = _write_folder(mat, tmp, label_names, tag_names)
        write_lines(tmp / "labels.txt", label_names)
        write_lines(tmp / "tag_vocab.txt", tag_names)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["features"] = str(out / FEATURES) if summary["features"] else None
    return {"out": str(out), "format": fmt, "labels": len(label_names), "tags": len(tag_names), **summary}


def _write_folder(mat: MatDataset, folder: Path, label_names: list, tag_names: list) -> dict:
    from PIL import Image

    lines, rows, feats, digests, test_rows, photos = [], [], [], [], [], 0
    row = 0
    for split in mat.splits.values():
        source = f"{split.name}_img.mat" if mat.layout == "gnn4cmr" else "IAll"
        for i in range(len(split)):
            if split.images is not None:
                image = f"images/{row:06d}.png"
                (folder / "images").mkdir(exist_ok=True)
                Image.fromarray(split.images[i]).save(folder / image)
                photos += 1
            else:
                image = f"{source}#{i}"
                vector = np.ascontiguousarray(split.features[i], dtype=np.float32)
                rows.append(row)
                feats.append(vector)
                digests.append(hashlib.sha256(vector.tobytes()).hexdigest())
            lines.append(json.dumps({"row": row, "image": image,
                                     "tags": [tag_names[j] for j in np.flatnonzero(split.bow[i])],
                                     "labels": [label_names[j] for j in np.flatnonzero(split.labels[i])]}))
            if split.name == "test":
                test_rows.append(row)
            row += 1
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if test_rows:
        (folder / "split_gnn4cmr.json").write_text(json.dumps({"test": test_rows}) + "\n", encoding="utf-8")
    if feats:
        write_feature_cache(folder / FEATURES, rows, np.stack(feats), digests, f"{mat.layout}-mat-features",
                            image_size=0, weights="", dim=feats[0].shape[0])
    return {"pairs": row, "photos": photos, "features": bool(feats), "test_rows": len(test_rows)}
