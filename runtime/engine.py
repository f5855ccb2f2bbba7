"""The one query pipeline the CLI, the server and apps share: a loaded bundle, its indexes (one per
modality, from an ``IndexSet``) and an encoder. Search and tagging are computed here and nowhere else;
callers only choose the encoder (the server's batches concurrent requests). New items' records come
from ``items.item_records``, which this module (for the server), ``ingest`` and ``embed`` all call.

It never prints and never exits: every problem is a ``DagnnError`` whose message names the input.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from .constants import MODALITIES
from .errors import BundleError, InputError, shorten
from .indexes import Hit, IndexSet, VectorIndex
from .items import item_records
from .metrics import above_thresholds, thresholds_to_json


@dataclass
class SearchResult:
    source: str            # "image" | "text": the query's modality
    target: str            # "image" | "text": what was searched
    query: str             # shown form: the image path/name, or the known tags joined by ", "
    ignored_tags: list     # text query tags not in the vocabulary
    hits: list             # [Hit], best first
    index: str             # location searched
    took_ms: float


@dataclass
class LabelScore:
    label: str
    score: float
    threshold: float | None  # None for an infinite threshold (a label the bundle never predicts)
    passes: bool = False     # score >= threshold


@dataclass
class TagResult:
    item: str
    labels: list           # [LabelScore] passing their thresholds, best first (at most ``top``)
    best: LabelScore       # the highest-scoring label, passing or not
    scores: list           # [LabelScore] of every label, best first


def _other(modality: str) -> str:
    return "text" if modality == "image" else "image"


def _check_digest(model, expect_digest) -> None:
    """``load(..., expect_digest=)``'s check, for a bundle loaded already."""
    from .digests import expected_digest

    wanted = expected_digest(expect_digest)
    if wanted is not None and model.bundle_digest != wanted:
        raise BundleError(f"bundle {model.source}: its digest {model.bundle_digest} is not the expected {wanted}")


def distinct_indexes(indexes: dict) -> list:
    """Each index of a modality -> index mapping once (an index that records no modality serves both)."""
    return list({id(ix): ix for ix in indexes.values()}.values())


def _searched(index_set: IndexSet, source: str | None, target: str | None):
    """The modalities to open for queries of ``source`` (None: all): the target, else the other modality
    when the set has it, else whatever is there."""
    if source is None:
        return None
    wanted = target or _other(source)
    return [wanted] if index_set.is_single() or index_set.find(wanted) is not None else None


def _shown_image(image) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, (bytes, bytearray)):
        return f"<{len(image)} bytes>"
    size = getattr(image, "size", None)
    return f"<image {size[0]}x{size[1]}>" if isinstance(size, tuple) and len(size) == 2 else "<image>"


class ModelEncoder:
    """Encodes in the calling thread with the model itself: what scripts, the CLI and one-off queries want.
    A server passes its own encoder (``server.batching.BatchingEncoder``) that batches concurrent requests."""

    def __init__(self, model):
        self.model = model

    def images(self, items) -> np.ndarray:
        return self.model.encode_images(items)

    def texts(self, items) -> np.ndarray:
        return self.model.encode_texts(items)


class Searcher:
    """Cross-modal search and tagging with one bundle. Safe to share between threads for searching."""

    def __init__(self, model, indexes=None, encoder=None):
        """``indexes``: an ``IndexSet`` or a location (every index there is opened), or a mapping modality ->
        open ``VectorIndex``; each must hold ``model``'s embedding space (checked here). ``encoder``: how
        images and texts become vectors (default: ``ModelEncoder(model)``)."""
        if indexes is None:
            indexes = {}
        elif not isinstance(indexes, dict):
            indexes = (indexes if isinstance(indexes, IndexSet) else IndexSet(indexes)).open_all()
        try:
            for modality, index in indexes.items():
                if modality not in MODALITIES:
                    raise InputError(f"indexes are keyed by modality ({', '.join(MODALITIES)}), not "
                                     f"{shorten(modality)}")
                if index.modality not in (None, modality):
                    raise InputError(f"index {index.location} holds {index.modality} items, not {modality} items")
                index.check_space(model, what=f"bundle {model.source}")
        except BaseException:
            for index in distinct_indexes(indexes):
                index.close()
            raise
        self.model = model
        self.indexes: dict[str, VectorIndex] = dict(indexes)
        self.encoder = encoder or ModelEncoder(model)

    @classmethod
    def open(cls, bundle, index=None, *, threads: int | None = None, providers="auto",
             expect_digest: str | None = None, force_threads: bool = False,
             ready_for: str | None = None, target: str | None = None, encoder=None) -> "Searcher":
        """``bundle``: a folder, a ``.dagnn`` archive or a loaded ``Model``. ``index``: an ``IndexSet`` or a
        location (one index, a parent holding ``image/`` and ``text/``, a Milvus URI); None for tagging
        only. ``expect_digest``: the ``bundle_digest`` the bundle must have (checked for a loaded ``Model``
        too); ``threads``/``force_threads``: as in ``load``. ``ready_for``: "image" or "text", the modality of
        the queries to come: its encoder is built now rather than at the first query, and only the index
        those queries search (``target``, else the default) is opened.

        The indexes open in a second thread while the bundle loads and the encoder builds: the two slow steps
        of a one-off query, mostly outside the GIL, so a text query's overlap on two cores (performance.md)."""
        from concurrent.futures import ThreadPoolExecutor

        from .execution import check_threads
        from .session import Model, load

        if isinstance(bundle, Model):
            _check_digest(bundle, expect_digest)
        else:  # refuse these before opening indexes
            check_threads(threads, force_threads)
        for name, value in (("ready_for", ready_for), ("target", target)):
            if value is not None and value not in MODALITIES:
                raise InputError(f"{name} must be image or text, not {shorten(value)}")
        index_set = None if index is None else index if isinstance(index, IndexSet) else IndexSet(index)

        def open_indexes() -> dict:
            return {} if index_set is None else index_set.open_all(_searched(index_set, ready_for, target))

        with ThreadPoolExecutor(1, thread_name_prefix="dagnn-open-indexes") as pool:
            opening = pool.submit(open_indexes)
            try:
                model = bundle if isinstance(bundle, Model) else load(
                    bundle, providers=providers, threads=threads, expect_digest=expect_digest,
                    force_threads=force_threads)
                if ready_for is not None:
                    model.prepare(ready_for)
                indexes = opening.result()
            except BaseException:
                indexes = opening.result()  # an index's error is the one raised, as when it opened first
                for ix in distinct_indexes(indexes):
                    ix.close()
                raise
        return cls(model, indexes, encoder)

    def index(self, modality: str) -> VectorIndex:
        """The open index holding ``modality``'s items (to add to it, or to read an item)."""
        if modality not in MODALITIES:
            raise InputError(f"modality must be image or text, not {shorten(modality)}")
        index = self.indexes.get(modality)
        if index is None or index.modality not in (None, modality):
            raise InputError(f"no {modality} index here (this searcher holds: {', '.join(self.indexes) or 'none'})")
        return index

    def _index_for(self, source: str, target: str | None):
        held = distinct_indexes(self.indexes)
        if target is None:  # the other modality, else the only index's own
            target = _other(source)
            if target not in self.indexes and len(held) == 1:
                target = held[0].modality or target
        elif target not in MODALITIES:
            raise InputError(f"target must be image or text, not {shorten(target)}")
        if target in self.indexes:
            return target, self.indexes[target]
        if len(held) == 1:
            raise InputError(f"index {held[0].location} holds {held[0].modality} items, not {target} items")
        raise InputError(f"no {target} index to search (this searcher holds: {', '.join(self.indexes) or 'none'})")

    def search(self, *, image=None, text=None, target: str | None = None, k: int = 10, labels=None,
               ef: int | None = None, exact: bool = False) -> SearchResult:
        """The ``k`` items of ``target`` most similar to an image (path, bytes or PIL image) or a text
        (``"sky, clouds"`` or a list of tags). Default target: the other modality (Image2Text, Text2Image)
        when its index is there, else the only index's own. ``labels``: only items carrying any of them."""
        if (image is None) == (text is None):
            raise InputError("give exactly one of image= or text=")
        source = "image" if image is not None else "text"
        target, index = self._index_for(source, target)
        start = time.perf_counter()
        ignored = []
        if image is not None:
            vector, shown = self.encoder.images([image]), _shown_image(image)
        else:
            known, unknown = self.model.parse_text(text)
            vector = self.encoder.texts([text])  # refuses a text without a known tag, naming close ones
            shown, ignored = ", ".join(known), unknown
        hits = index.search(vector, k=k, labels=labels, ef=ef, exact=exact)[0]
        took = (time.perf_counter() - start) * 1e3
        return SearchResult(source, target, shown, ignored, hits, str(index.location), took)

    def tag(self, images, top: int | None = None) -> list:
        """Per image, the labels whose score passes the bundle's calibrated threshold, best first (at most
        ``top``), the best label even when none passes, and every label's score."""
        from .decode import image_list

        items = image_list(images)
        all_scores = self.model.score_labels(self.encoder.images(items))
        thresholds = thresholds_to_json(self.model.thresholds)
        results = []
        for item, row in zip(items, all_scores):
            passing = set(above_thresholds(row, self.model.thresholds).tolist())
            ranked = [LabelScore(self.model.labels[j], float(row[j]), thresholds[j], j in passing)
                      for j in np.argsort(-row, kind="stable")]
            chosen = [s for s in ranked if s.passes][: None if top is None else max(0, int(top))]
            results.append(TagResult(_shown_image(item), chosen, ranked[0], ranked))
        return results

    def new_items(self, modality: str, items, metadata) -> tuple:
        """(vectors, records) of items to add to the ``modality`` index: the vectors from the encoder, the
        records as every write path stores them (``items.item_records``)."""
        if modality not in MODALITIES:
            raise InputError(f"modality must be image or text, not {shorten(modality)}")
        vectors = self.encoder.images(items) if modality == "image" else self.encoder.texts(items)
        return vectors, item_records(self.model, modality, items, vectors, metadata)

    def close(self) -> None:
        for index in distinct_indexes(self.indexes):
            index.close()
        self.indexes = {}


__all__ = ["Searcher", "ModelEncoder", "SearchResult", "LabelScore", "TagResult", "Hit"]
