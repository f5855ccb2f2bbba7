"""A loaded bundle: onnxruntime sessions for both encoders plus the label classifiers and thresholds.

A session is built (and its graph read and verified) when an encoder is first used, so that a text query
never pays for the image graph; ``load(lazy=False)`` builds them up front (``Model.prepare``: one of them).
Apart from that one-time build, guarded by a lock, ``Model`` keeps no mutable state (onnxruntime sessions
may be run from several threads at once), so one instance can serve concurrent callers.
"""
from __future__ import annotations

import copy
import threading

import numpy as np

from .bundle import GRAPHS, MANIFEST, Bundle, read_bundle
from .constants import MODALITIES
from .decode import image_list
from .errors import BundleError, ImageInputError, InputError, positive_int, shorten
from .execution import check_threads, resolve_providers, usable_cores
from .graph_session import check_signature, graph_session
from .metrics import above_thresholds, l2_normalize
from .text_ids import tag_id_batches
from .texts import Vocabulary

# A text batch of at most this many rows runs in a single-threaded session of the text graph: a query's
# few-row products are too small to share between threads, whose hand-offs would cost more than they save.
SMALL_TEXT_BATCH = 16
SINGLE_THREAD = "1-thread "

class Model:
    """The bundle's encoders and label scores: images and texts into the common space, and the labels an
    embedding scores above the calibrated thresholds (``Searcher.tag`` builds tagging on these)."""

    def __init__(self, bundle: Bundle, providers="auto", threads: int | None = None, lazy: bool = True,
                 force_threads: bool = False):
        self._bundle = bundle
        # The threaded sessions' pool size, fixed when the model is made (not looked up again per query)
        self._threads = check_threads(threads, force_threads) or usable_cores()
        self._providers = resolve_providers(providers)
        self._sessions: dict = {}
        self._weights: dict = {}
        self._lock = threading.Lock()
        text = bundle.manifest["graphs"]["text_encoder"]
        self._text_input = text.get("input")
        if self._text_input == "tags" and text.get("pad_id", len(bundle.vocab)) != len(bundle.vocab):
            raise BundleError(f"bundle {bundle.source}: {MANIFEST} graphs.text_encoder.pad_id is "
                              f"{shorten(text.get('pad_id'))}, not the vocabulary size {len(bundle.vocab)}")
        self._vocabulary = Vocabulary(bundle.vocab)
        zn = l2_normalize(bundle.classifiers)
        zn.flags.writeable = False
        self._z_normalized = zn
        if not lazy:
            for g in GRAPHS:
                self._session(g)
                if g == "text_encoder" and self._threads > 1:
                    self._session(SINGLE_THREAD + g)

    def _session(self, g: str):
        sess = self._sessions.get(g)
        if sess is not None:
            return sess
        with self._lock:
            if g not in self._sessions:
                self._sessions[g] = self._build(g)
            return self._sessions[g]

    def _build(self, key: str):
        bundle, g = self._bundle, key.removeprefix(SINGLE_THREAD)
        if g not in self._weights:  # the 1-thread and the threaded session of a graph share its weights
            self._weights[g] = bundle.read_weights(g)
        sess = graph_session(bundle, g, threads=1 if key != g else self._threads,
                             providers=self._providers, weights=self._weights[g])
        c, d = len(bundle.labels), bundle.embedding_dim
        s, v = bundle.image_size, len(bundle.vocab)
        if g == "image_encoder":
            check_signature(bundle, sess, g, "tensor(uint8)", [None, s, s, 3], d, c)
        elif self._text_input == "tags":
            check_signature(bundle, sess, g, "tensor(int64)", [None, None], d, c)
        else:
            check_signature(bundle, sess, g, "tensor(float)", [None, v], d, c)
        return sess

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
        """The execution providers the sessions are built with, in order of preference."""
        return [p[0] if isinstance(p, tuple) else p for p in self._providers]

    def __repr__(self) -> str:
        return (f"<dagnn_runtime.Model {self.source!r}: {len(self.labels)} labels, {len(self.vocab)} tags, "
                f"d={self.embedding_dim}, providers={self.providers}>")

    # ---- encoding ------------------------------------------------------------------------------------
    def prepare(self, modality: str, batch: int = 1) -> None:
        """Build now the session that encoding ``batch`` items of ``modality`` will use, so that a caller
        can overlap this start-up cost with its own (``Searcher.open`` opens the indexes meanwhile)."""
        if modality not in MODALITIES:
            raise InputError(f"modality must be one of {MODALITIES}, got {shorten(modality)}")
        self._session(self._session_key(f"{modality}_encoder", positive_int(batch, "batch")))

    def _session_key(self, g: str, n: int) -> str:
        """The session that runs ``n`` rows of graph ``g`` (see ``SMALL_TEXT_BATCH``)."""
        if g == "text_encoder" and n <= SMALL_TEXT_BATCH and self._threads > 1:
            return SINGLE_THREAD + g
        return g

    def _run(self, g: str, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spec = self._bundle.manifest["graphs"][g]
        emb, scores = self._session(self._session_key(g, len(array))).run(["embedding", "label_scores"],
                                                                          {spec["input"]: array})
        if not (np.isfinite(emb).all() and np.isfinite(scores).all()):  # 3 µs at 1 row, 7-11 µs at 32 (d=1024)
            raise self._not_finite(g, array, emb, scores)
        return emb, scores

    def _not_finite(self, g: str, array: np.ndarray, emb: np.ndarray, scores: np.ndarray) -> Exception:
        """The error for a graph run that gave NaN or infinity: the caller's, when its float input (a bag of
        words) was not finite itself; else the bundle's, naming it and the graph, so that no answer (and no
        index entry) is ever made of NaN. ``BundleError``: the server answers 503, the CLI one line."""
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            return InputError(f"the input of {g} contains NaN or infinite values")
        what = "embedding" if not np.isfinite(emb).all() else "label_scores"
        rows = np.flatnonzero(~np.isfinite(emb if what == "embedding" else scores).all(axis=1))
        return BundleError(f"bundle {self._bundle.source}: graph {g} gave NaN or infinite {what} for "
                           f"{len(rows)} of {len(array)} inputs (first: row {rows[0]}); the bundle's weights "
                           "cannot be used: re-export it")

    def encode_images(self, items, batch_size: int = 32) -> np.ndarray:
        """Paths, bytes, PIL images or uint8 arrays → L2-normalised float32 ``(n, d)``.

        A single path/bytes/PIL image/(H, W, 3) array counts as a list of one; a 4-D uint8 array is a batch.
        The next batch is decoded while the encoder runs on this one (``preprocess.iter_pixels``).
        """
        from .preprocess import iter_pixels  # Pillow only when images are used

        items = image_list(items)
        out = np.empty((len(items), self.embedding_dim), dtype=np.float32)
        batch_size = positive_int(batch_size, "batch_size")
        for positions, pixels, errors in iter_pixels(items, self.image_size, batch_size):
            if errors:
                i, exc = errors[0]
                raise ImageInputError(str(exc) if len(items) == 1 else f"item {i}: {exc}") from exc
            out[positions] = self.encode_pixels(pixels)
        return out

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """A uint8 batch ``(n, S, S, 3)`` from ``preprocess.iter_pixels`` → L2-normalised ``(n, d)``: callers
        that decode apart from encoding (ingest, the server's batches) hand over pixels."""
        pixels = np.asarray(pixels)
        s = self.image_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (s, s, 3):
            raise InputError(f"pixels must be uint8 (n, {s}, {s}, 3), got {pixels.dtype} {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return l2_normalize(self._run("image_encoder", np.ascontiguousarray(pixels))[0])

    def parse_text(self, item) -> tuple[list, list]:
        """A string (``"sky, clouds"``) or a list of tags → (tags in the vocabulary, tags not in it)."""
        return self._vocabulary.parse(item)

    def _bow_of_ids(self, ids: list) -> np.ndarray:
        out = np.zeros((len(ids), len(self.vocab)), dtype=np.float32)
        for i, row in enumerate(ids):
            out[i, row] = 1.0
        return out

    def encode_texts(self, items, batch_size: int = 256) -> np.ndarray:
        """Tag lists or strings → L2-normalised float32 ``(n, d)``. Tags outside the vocabulary are ignored,
        but a text must contain at least one known tag."""
        ids = self._vocabulary.ids(items)
        if self._text_input == "tags":
            return self._encode_tag_ids(ids, positive_int(batch_size, "batch_size"))
        return self.encode_bow(self._bow_of_ids(ids), batch_size=batch_size)

    def encode_bow(self, bow, batch_size: int = 256) -> np.ndarray:
        """A data set's 0/1 bag-of-words matrix ``(n, V)`` over ``vocab`` → L2-normalised float32 ``(n, d)``;
        unlike ``encode_texts``, a row may be empty (evaluation encodes every pair of a split)."""
        bow = np.asarray(bow, dtype=np.float32)
        if bow.ndim != 2 or bow.shape[1] != len(self.vocab):
            raise InputError(f"bag of words has shape {bow.shape}, expected (n, {len(self.vocab)})")
        batch_size = positive_int(batch_size, "batch_size")
        if self._text_input == "tags":
            if not np.isin(bow, (0.0, 1.0)).all():
                raise InputError("bag of words must hold only 0 and 1 (this bundle's text graph takes tag ids)")
            return self._encode_tag_ids([np.flatnonzero(row) for row in bow], batch_size)
        out = np.empty((len(bow), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(bow), batch_size):
            chunk = np.ascontiguousarray(bow[start:start + batch_size])
            out[start:start + len(chunk)] = self._run("text_encoder", chunk)[0]
        return l2_normalize(out)

    def _encode_tag_ids(self, ids: list, batch_size: int) -> np.ndarray:
        """Tag-id lists → embeddings through the tag-id text graph (format 2), see ``tag_id_batches``."""
        out = np.empty((len(ids), self.embedding_dim), dtype=np.float32)
        for rows, chunk in tag_id_batches(ids, len(self.vocab), batch_size):
            out[rows] = self._run("text_encoder", chunk)[0]
        return l2_normalize(out)

    # ---- labels --------------------------------------------------------------------------------------
    def score_labels(self, embeddings) -> np.ndarray:
        """Cosine of each embedding with each label classifier in Z → float32 ``(n, c)``."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None]
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
            raise InputError(f"embeddings have shape {emb.shape}, expected (n, {self.embedding_dim})")
        scores = l2_normalize(emb) @ self._z_normalized.T
        if not np.isfinite(scores).all():  # Z is finite (read_bundle), so only non-finite embeddings get here
            raise InputError("embeddings to score contain NaN or infinite values")
        return scores

    def labels_above_threshold(self, scores, top: int | None = None) -> list:
        """``(n, c)`` label scores → per row the (label, score) pairs at or above the calibrated thresholds,
        highest first, at most ``top`` (``metrics.above_thresholds``)."""
        scores = np.asarray(scores, dtype=np.float32)
        return [[(self.labels[j], float(row[j])) for j in above_thresholds(row, self.thresholds, top)]
                for row in np.atleast_2d(scores)]


def load(bundle_path, providers="auto", threads: int | None = None, *, lazy: bool = True,
         expect_digest: str | None = None, force_threads: bool = False) -> Model:
    """Open a bundle (folder or ``.dagnn`` archive): verify the manifest, the small files and the dimensions
    now, and each graph when its encoder is first used (``lazy=False``: every graph now).

    ``expect_digest``: the ``bundle_digest`` the bundle must have (pins one exact bundle). ``threads``: at
    most the number of cores unless ``force_threads`` (or ``DAGNN_FORCE_THREADS=1``)."""
    check_threads(threads, force_threads)  # before the verification
    return Model(read_bundle(bundle_path, expect_digest=expect_digest), providers=providers, threads=threads,
                 lazy=lazy, force_threads=force_threads)
