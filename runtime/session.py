"""A loaded bundle: onnxruntime sessions for both encoders plus the label classifiers and thresholds.

``Model`` keeps no mutable state after construction (onnxruntime sessions may be run from several threads
at once), so one instance can serve concurrent callers.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
from typing import Iterable, Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image

from .bundle import GRAPHS, MANIFEST, Bundle, read_bundle
from .dataset import bag_of_words, tokenize
from .errors import BundleError, ImageInputError, InputError, shorten
from .execution import check_threads, resolve_providers
from .metrics import l2_normalize
from .preprocess import load_image

MAX_TEXT_CHARS = 10_000
MAX_TAGS = 512


def _dims_ok(shape, expected) -> bool:
    """Static dims must equal the expected ones; symbolic/unknown dims (str/None) and expected None pass."""
    if shape is None or len(shape) != len(expected):
        return False
    return all(e is None or not isinstance(s, int) or s == e for s, e in zip(shape, expected))


class Model:
    """Encode images and texts into the bundle's common space, score labels and tag images."""

    def __init__(self, bundle: Bundle, providers="auto", threads: int | None = None, force_threads: bool = False):
        self._bundle = bundle
        threads = check_threads(threads, force_threads)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # onnxruntime's own warnings would otherwise go to stderr unasked
        chosen = resolve_providers(providers)
        self._sessions = {}
        for g in GRAPHS:
            try:
                self._sessions[g] = ort.InferenceSession(bundle.graph_bytes[g], sess_options=opts, providers=chosen)
            except Exception as exc:  # onnxruntime raises its own exception types
                name = bundle.manifest["graphs"][g]["file"]
                raise BundleError(f"bundle {bundle.source}: onnxruntime cannot load {name!r} ({exc})") from exc
        c, d = len(bundle.labels), bundle.embedding_dim
        s, v = bundle.image_size, len(bundle.vocab)
        self._check_graph("image_encoder", "tensor(uint8)", [None, s, s, 3], d, c)
        self._check_graph("text_encoder", "tensor(float)", [None, v], d, c)
        self._vocab_index = {t: j for j, t in enumerate(bundle.vocab)}
        zn = l2_normalize(bundle.classifiers)
        zn.flags.writeable = False
        self._z_normalized = zn
        self._bundle = dataclasses.replace(bundle, graph_bytes={})  # the sessions hold the graphs now

    def _check_graph(self, g: str, dtype: str, in_shape: list, d: int, c: int) -> None:
        spec = self._bundle.manifest["graphs"][g]
        where = f"bundle {self._bundle.source}: {spec['file']!r}"
        sess = self._sessions[g]
        inputs = sess.get_inputs()
        if len(inputs) != 1 or inputs[0].name != spec.get("input"):
            raise BundleError(f"{where} has inputs {[i.name for i in inputs]}, {MANIFEST} says {spec.get('input')!r}")
        if inputs[0].type != dtype or not _dims_ok(inputs[0].shape, in_shape):
            raise BundleError(f"{where} input {inputs[0].name!r} is {inputs[0].type} {inputs[0].shape}, "
                              f"expected {dtype} {['N' if x is None else x for x in in_shape]}")
        outputs = {o.name: o for o in sess.get_outputs()}
        wanted = spec.get("outputs", [])
        if list(wanted)[:2] != ["embedding", "label_scores"] or any(o not in outputs for o in wanted):
            raise BundleError(f"{where} has outputs {sorted(outputs)}, {MANIFEST} says {wanted} "
                              "(must start with 'embedding', 'label_scores')")
        for out, width in (("embedding", d), ("label_scores", c)):
            if not _dims_ok(outputs[out].shape, [None, width]):
                raise BundleError(f"{where} output {out!r} has shape {outputs[out].shape}, expected [N, {width}]")

    # ---- read-only views -------------------------------------------------------------------------------
    @property
    def labels(self) -> tuple:
        return self._bundle.labels

    @property
    def vocab(self) -> tuple:
        return self._bundle.vocab

    @property
    def manifest(self) -> dict:
        """A copy of manifest.json (mutating it does not affect the model)."""
        return copy.deepcopy(self._bundle.manifest)

    @property
    def embedding_space(self) -> str:
        return self._bundle.embedding_space

    @property
    def bundle_digest(self) -> str:
        """The bundle's identity: SHA-256 of its canonical manifest, which lists every file's digest."""
        return self._bundle.digest

    @property
    def embedding_dim(self) -> int:
        return self._bundle.embedding_dim

    @property
    def thresholds(self) -> np.ndarray:
        return self._bundle.thresholds

    @property
    def classifiers(self) -> np.ndarray:
        return self._bundle.classifiers

    @property
    def image_size(self) -> int:
        return self._bundle.image_size

    @property
    def source(self) -> str:
        return self._bundle.source

    @property
    def providers(self) -> list:
        return self._sessions["image_encoder"].get_providers()

    def __repr__(self) -> str:
        return (f"<dagnn_runtime.Model {self.source!r}: {len(self.labels)} labels, {len(self.vocab)} tags, "
                f"d={self.embedding_dim}, providers={self.providers}>")

    # ---- encoding ------------------------------------------------------------------------------------
    def _run(self, g: str, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spec = self._bundle.manifest["graphs"][g]
        emb, scores = self._sessions[g].run(["embedding", "label_scores"], {spec["input"]: array})
        return emb, scores

    def encode_images(self, items, batch_size: int = 32) -> np.ndarray:
        """Paths, bytes, PIL images or uint8 arrays → L2-normalised float32 ``(n, d)``.

        A single path/bytes/PIL image/(H, W, 3) array counts as a list of one; a 4-D uint8 array is a batch.
        """
        items = _image_list(items)
        batch_size = _positive(batch_size, "batch_size")
        out = np.empty((len(items), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            out[start:start + len(chunk)] = self.encode_pixels(self.preprocess(chunk))
        return out

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """An already preprocessed uint8 batch ``(n, S, S, 3)`` (see ``preprocess``) → L2-normalised ``(n, d)``."""
        pixels = np.asarray(pixels)
        s = self.image_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (s, s, 3):
            raise InputError(f"pixels must be uint8 (n, {s}, {s}, 3), got {pixels.dtype} {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return l2_normalize(self._run("image_encoder", np.ascontiguousarray(pixels))[0])

    def preprocess(self, items: Sequence) -> np.ndarray:
        """Images → the uint8 ``(n, S, S, 3)`` batch the image graph takes (``preprocess.load_image``)."""
        arrays = []
        for i, item in enumerate(items):
            try:
                arrays.append(load_image(item, self.image_size))
            except ImageInputError as exc:
                raise ImageInputError(str(exc) if len(items) == 1 else f"item {i}: {exc}") from exc
        if not arrays:
            return np.zeros((0, self.image_size, self.image_size, 3), dtype=np.uint8)
        return np.stack(arrays)

    def parse_text(self, item) -> tuple[list, list]:
        """A string (``"sky, clouds"``) or a list of tags → (tags in the vocabulary, tags not in it)."""
        if isinstance(item, str):
            parts = [item]
        elif isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item):
            parts = item
        else:
            raise InputError(f"a text must be a string or a list of tag strings, got {type(item).__name__}")
        length = sum(len(p) for p in parts) + max(0, len(parts) - 1)
        shown = shorten(item if isinstance(item, str) else ", ".join(parts[:MAX_TAGS + 1]))
        if length > MAX_TEXT_CHARS or len(parts) > MAX_TAGS:
            raise InputError(f"text {shown} is too long: at most {MAX_TEXT_CHARS} characters and {MAX_TAGS} tags")
        tags = list(dict.fromkeys(tok for p in parts for tok in tokenize(p)))
        if len(tags) > MAX_TAGS:
            raise InputError(f"text {shown} has {len(tags)} distinct tags, more than the limit of {MAX_TAGS}")
        known = [t for t in tags if t in self._vocab_index]
        return known, [t for t in tags if t not in self._vocab_index]

    def closest_tags(self, tag: str, n: int = 3) -> list:
        return difflib.get_close_matches(tag, self.vocab, n=n, cutoff=0.6)

    def bow(self, items) -> np.ndarray:
        """Texts → the 0/1 bag of words over the bundle vocabulary; a text with no known tag is refused."""
        items = [items] if isinstance(items, str) else list(items)
        tag_lists = []
        for i, item in enumerate(items):
            known, unknown = self.parse_text(item)
            where = f"text {shorten(item)}" if len(items) == 1 else f"text {i} ({shorten(item)})"
            if not known and not unknown:
                raise InputError(f"{where} is empty: give at least one tag, e.g. 'sky, clouds'")
            if not known:
                hints = []
                for tag in unknown[:5]:
                    close = self.closest_tags(tag[:100])
                    shown = shorten(tag, 40)
                    hints.append(f"{shown} (closest: {', '.join(close)})" if close else f"{shown} (no close tag)")
                if len(unknown) > 5:
                    hints.append(f"and {len(unknown) - 5} more")
                raise InputError(f"{where}: no tag is in the bundle vocabulary of {len(self.vocab)} tags: "
                                 + "; ".join(hints))
            tag_lists.append(known)
        return bag_of_words(tag_lists, self._vocab_index)

    def encode_texts(self, items, batch_size: int = 256) -> np.ndarray:
        """Tag lists or strings → L2-normalised float32 ``(n, d)``. Tags outside the vocabulary are ignored,
        but a text must contain at least one known tag."""
        return self.encode_bow(self.bow(items), batch_size=batch_size)

    def encode_bow(self, bow, batch_size: int = 256) -> np.ndarray:
        """A ready 0/1 bag-of-words matrix ``(n, V)`` over ``vocab`` → L2-normalised float32 ``(n, d)``."""
        bow = np.asarray(bow, dtype=np.float32)
        if bow.ndim != 2 or bow.shape[1] != len(self.vocab):
            raise InputError(f"bag of words has shape {bow.shape}, expected (n, {len(self.vocab)})")
        batch_size = _positive(batch_size, "batch_size")
        out = np.empty((len(bow), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(bow), batch_size):
            chunk = np.ascontiguousarray(bow[start:start + batch_size])
            out[start:start + len(chunk)] = self._run("text_encoder", chunk)[0]
        return l2_normalize(out)

    # ---- labels --------------------------------------------------------------------------------------
    def score_labels(self, embeddings) -> np.ndarray:
        """Cosine of each embedding with each label classifier in Z → float32 ``(n, c)``."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None]
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
            raise InputError(f"embeddings have shape {emb.shape}, expected (n, {self.embedding_dim})")
        return l2_normalize(emb) @ self._z_normalized.T

    def labels_above_threshold(self, scores, top: int | None = None) -> list:
        """``(n, c)`` label scores → per row the (label, score) pairs at or above the calibrated thresholds,
        highest first, at most ``top``."""
        scores = np.asarray(scores, dtype=np.float32)
        result = []
        for row in np.atleast_2d(scores):
            keep = np.flatnonzero(row >= self.thresholds)
            keep = keep[np.argsort(-row[keep], kind="stable")]
            if top is not None:
                keep = keep[: max(0, int(top))]
            result.append([(self.labels[j], float(row[j])) for j in keep])
        return result

    def tag(self, items, top: int | None = None, modality: str = "image", batch_size: int = 32) -> list:
        """Per item, the labels whose score passes the bundle's calibrated threshold: [(label, score), ...]."""
        if modality == "image":
            emb = self.encode_images(items, batch_size=batch_size)
        elif modality == "text":
            emb = self.encode_texts(items)
        else:
            raise InputError(f"modality must be 'image' or 'text', got {modality!r}")
        return self.labels_above_threshold(self.score_labels(emb), top=top)


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _image_list(items) -> list:
    if isinstance(items, (str, os.PathLike, bytes, bytearray, Image.Image)):
        return [items]
    if isinstance(items, np.ndarray):
        if items.ndim == 4:
            return list(items)
        return [items]
    if isinstance(items, Iterable):
        return list(items)
    raise InputError(f"images must be a path, bytes, PIL image, uint8 array or a list of them, "
                     f"got {type(items).__name__}")


def load(bundle_path, providers="auto", threads: int | None = None, *, expect_digest: str | None = None,
         force_threads: bool = False) -> Model:
    """Open a bundle (folder or ``.dagnn`` archive), verify every file and dimension, build the sessions.

    ``expect_digest``: the ``bundle_digest`` the bundle must have (pins one exact bundle). ``threads``: at
    most the number of cores unless ``force_threads`` (or ``DAGNN_FORCE_THREADS=1``)."""
    check_threads(threads, force_threads)  # before the (slow) verification
    return Model(read_bundle(bundle_path, expect_digest=expect_digest), providers=providers, threads=threads,
                 force_threads=force_threads)
