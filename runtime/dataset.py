"""The dagnn data set format: a folder users can produce for their own photo/tag collections.

    DIR/pairs.jsonl     one JSON object per line: {"row": int, "image": "rel/path.jpg" | null,
                        "tags": [str, ...], "labels": [str, ...]}
    DIR/labels.txt      one label name per line (column order of the label matrix)
    DIR/tag_vocab.txt   one tag per line (column order of the bag-of-words)
    DIR/split*.json     optional: {"test": [row, ...]} fixes the test pairs (e.g. split_test2000.json)
    DIR/*.npy           optional label word vectors, one row per label

Pairs without an image only serve steps that need text alone (text-MLP pretraining).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import jsonio
from .errors import DatasetError


@dataclass(frozen=True)
class Pair:
    row: int
    image: str | None
    tags: tuple[str, ...]
    labels: tuple[str, ...]


_TOKEN_SPLIT = re.compile(r"[,;\s]+")


def tokenize(text: str) -> list[str]:
    """Split free text such as ``"sky, clouds sunset"`` into lower-cased tags."""
    return [tok for tok in _TOKEN_SPLIT.split(text.strip().lower()) if tok]


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"missing file {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if len(set(lines)) != len(lines):
        raise DatasetError(f"{path}: duplicate entries")
    return lines


def bag_of_words(tag_lists, vocab_index: dict[str, int]) -> np.ndarray:
    """0/1 float32 matrix ``(n, len(vocab))``; tags outside the vocabulary are ignored."""
    bow = np.zeros((len(tag_lists), len(vocab_index)), dtype=np.float32)
    for i, tags in enumerate(tag_lists):
        for tag in tags:
            j = vocab_index.get(tag)
            if j is not None:
                bow[i, j] = 1.0
    return bow


@dataclass
class Splits:
    """Indices (positions in ``Dataset.pairs``) of each split. ``text_only`` are training pairs without image."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    text_only: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def to_json(self, dataset: "Dataset") -> dict:
        rows = lambda idx: [dataset.pairs[i].row for i in idx]  # noqa: E731
        return {"train": rows(self.train), "val": rows(self.val), "test": rows(self.test),
                "text_only": rows(self.text_only)}


class Dataset:
    def __init__(self, root: Path, pairs: list[Pair], labels: list[str], vocab: list[str]):
        self.root = Path(root)
        self.pairs = pairs
        self.labels = labels
        self.vocab = vocab
        self.label_index = {name: j for j, name in enumerate(labels)}
        self.vocab_index = {tag: j for j, tag in enumerate(vocab)}
        self.row_index = {p.row: i for i, p in enumerate(pairs)}

    @classmethod
    def load(cls, root) -> "Dataset":
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"data set folder {root} does not exist")
        labels = read_lines(root / "labels.txt")
        vocab = read_lines(root / "tag_vocab.txt")
        label_set = set(labels)
        pairs, seen = [], set()
        path = root / "pairs.jsonl"
        if not path.is_file():
            raise DatasetError(f"missing file {path}")
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                rec = jsonio.expect(jsonio.loads(line, f"{path}:{lineno}", error=DatasetError), dict,
                                    f"{path}:{lineno}", error=DatasetError)
                try:
                    pair = Pair(int(rec["row"]), rec.get("image"), tuple(rec.get("tags", ())),
                                tuple(rec.get("labels", ())))
                except (ValueError, KeyError, TypeError) as exc:
                    raise DatasetError(f"{path}:{lineno}: malformed record ({exc})") from exc
                unknown = [name for name in pair.labels if name not in label_set]
                if unknown:
                    raise DatasetError(f"{path}:{lineno}: labels not in labels.txt: {unknown}")
                if pair.row in seen:
                    raise DatasetError(f"{path}:{lineno}: duplicate row {pair.row}")
                seen.add(pair.row)
                pairs.append(pair)
        if not pairs:
            raise DatasetError(f"{path} holds no pairs")
        return cls(root, pairs, labels, vocab)

    def __len__(self) -> int:
        return len(self.pairs)

    def image_path(self, i: int) -> Path | None:
        image = self.pairs[i].image
        return None if image is None else self.root / image

    def with_images(self) -> np.ndarray:
        return np.array([i for i, p in enumerate(self.pairs) if p.image is not None], dtype=np.int64)

    def bow(self, indices=None) -> np.ndarray:
        idx = range(len(self.pairs)) if indices is None else indices
        return bag_of_words([self.pairs[i].tags for i in idx], self.vocab_index)

    def label_matrix(self, indices=None) -> np.ndarray:
        idx = range(len(self.pairs)) if indices is None else indices
        y = np.zeros((len(idx), len(self.labels)), dtype=np.float32)
        for k, i in enumerate(idx):
            for name in self.pairs[i].labels:
                y[k, self.label_index[name]] = 1.0
        return y

    def split_file(self) -> Path | None:
        candidates = sorted(self.root.glob("split*.json"))
        return candidates[0] if candidates else None

    def splits(self, seed: int = 0, test_size: int = 2000, val_fraction: float = 0.1) -> Splits:
        """Deterministic train/val/test split of the pairs with an image.

        The test pairs come from the folder's ``split*.json`` when it has one (the canonical protocol),
        otherwise ``test_size`` random image pairs. Validation is carved out of the remaining image pairs
        (``val_fraction``), never from test: model selection must not see the test split.
        """
        rng = np.random.default_rng(seed)
        image_idx = self.with_images()
        split_path = self.split_file()
        if split_path is not None:
            split = jsonio.load_file(split_path, error=DatasetError)
            test_rows = split.get("test") if isinstance(split, dict) else None
            if not isinstance(test_rows, list) or not all(isinstance(r, int) for r in test_rows):
                raise DatasetError(f"{split_path}: expected {{\"test\": [row, ...]}} with integer rows")
            missing = [r for r in test_rows if r not in self.row_index]
            if missing:
                raise DatasetError(f"{split_path}: {len(missing)} test rows not in pairs.jsonl, e.g. {missing[:5]}")
            test = np.array(sorted(self.row_index[r] for r in test_rows), dtype=np.int64)
            no_image = [self.pairs[i].row for i in test if self.pairs[i].image is None]
            if no_image:
                raise DatasetError(f"{split_path}: test rows without an image, e.g. {no_image[:5]}")
        else:
            n_test = min(test_size, len(image_idx) // 5)
            test = np.sort(rng.permutation(image_idx)[:n_test])
        rest = np.setdiff1d(image_idx, test)
        rest = rng.permutation(rest)
        n_val = max(1, int(round(len(rest) * val_fraction))) if len(rest) > 1 else 0
        val, train = np.sort(rest[:n_val]), np.sort(rest[n_val:])
        text_only = np.array([i for i, p in enumerate(self.pairs) if p.image is None], dtype=np.int64)
        return Splits(train=train, val=val, test=test, text_only=text_only)
