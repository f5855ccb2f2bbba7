"""The search engine the CLI, a server and apps share: a loaded bundle plus its indexes, one per modality.

It never prints and never exits: every problem is a ``DagnnError`` whose message names the input.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .constants import MODALITIES
from .errors import BundleError, InputError, shorten
from .indexes import Hit, VectorIndex, locate_index, open_index
from .metrics import thresholds_to_json


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


@dataclass
class TagResult:
    item: str
    labels: list           # [LabelScore] passing their thresholds, best first
    best: LabelScore       # the highest-scoring label, passing or not


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


def _open_indexes(index) -> dict:
    """Modality -> opened index, for ``Searcher.open``'s ``index``."""
    if index is None:
        return {}
    single = locate_index(index)
    if single is not None:
        ix = open_index(single)
        # an index that does not record its modality answers for both
        return {m: ix for m in ([ix.modality] if ix.modality else MODALITIES)}
    indexes = {}
    try:
        for m in MODALITIES:
            if locate_index(index, m):
                indexes[m] = open_index(index, modality=m)
    except BaseException:
        for ix in indexes.values():
            ix.close()
        raise
    if not indexes:
        raise InputError(f"no index at {shorten(str(index), path=True)} (expected index.db there or in its "
                         "image/ or text/)")
    return indexes


def _shown_image(image) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, (bytes, bytearray)):
        return f"<{len(image)} bytes>"
    size = getattr(image, "size", None)
    return f"<image {size[0]}x{size[1]}>" if isinstance(size, tuple) and len(size) == 2 else "<image>"


class Searcher:
    """Cross-modal search and tagging with one bundle. Safe to share between threads for searching."""

    def __init__(self, model, indexes: dict):
        """``indexes``: modality -> VectorIndex of ``model``'s embedding space (checked here)."""
        for modality, index in indexes.items():
            if modality not in MODALITIES:
                raise InputError(f"indexes are keyed by modality ({', '.join(MODALITIES)}), not {shorten(modality)}")
            if index.modality not in (None, modality):
                raise InputError(f"index {index.location} holds {index.modality} items, not {modality} items")
            index.check_space(model, what=f"bundle {model.source}")
        self.model = model
        self.indexes: dict[str, VectorIndex] = dict(indexes)

    @classmethod
    def open(cls, bundle, index=None, *, threads: int | None = None, providers="auto",
             expect_digest: str | None = None, force_threads: bool = False,
             ready_for: str | None = None) -> "Searcher":
        """``bundle``: a folder, a ``.dagnn`` archive or a loaded ``Model``. ``index``: one index location,
        or a parent holding ``image/`` and ``text/`` (either may be missing); None for tagging only.
        ``expect_digest``: the ``bundle_digest`` the bundle must have (checked for a loaded ``Model`` too);
        ``threads``/``force_threads``: as in ``load``. ``ready_for``: "image" or "text", the modality of the
        queries to come, whose encoder is then built now rather than at the first query.

        The indexes open in a second thread while the bundle loads and the encoder builds: the two slow steps
        of a one-off query, mostly outside the GIL, so a text query's overlap on two cores (performance.md)."""
        from concurrent.futures import ThreadPoolExecutor

        from .execution import check_threads
        from .session import Model, load

        if isinstance(bundle, Model):
            _check_digest(bundle, expect_digest)
        else:  # refuse these before opening indexes
            check_threads(threads, force_threads)
        if ready_for is not None and ready_for not in MODALITIES:
            raise InputError(f"ready_for must be image or text, not {shorten(ready_for)}")
        with ThreadPoolExecutor(1, thread_name_prefix="dagnn-open-indexes") as pool:
            opening = pool.submit(_open_indexes, index)
            try:
                model = bundle if isinstance(bundle, Model) else load(
                    bundle, providers=providers, threads=threads, expect_digest=expect_digest,
                    force_threads=force_threads)
                if ready_for is not None:
                    model.prepare(ready_for)
                indexes = opening.result()
                return cls(model, indexes)
            except BaseException:
                indexes = opening.result()  # an index's error is the one raised, as when it opened first
                for ix in distinct_indexes(indexes):
                    ix.close()
                raise

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
            vector, shown = self.model.encode_images([image]), _shown_image(image)
        else:
            known, unknown = self.model.parse_text(text)
            vector = self.model.encode_texts([text])  # refuses a text without a known tag, naming close ones
            shown, ignored = ", ".join(known), unknown
        hits = index.search(vector, k=k, labels=labels, ef=ef, exact=exact)[0]
        took = (time.perf_counter() - start) * 1e3
        return SearchResult(source, target, shown, ignored, hits, str(index.location), took)

    def tag(self, images, top: int | None = None) -> list:
        """Per image, the labels whose score passes the bundle's calibrated threshold, best first (at most
        ``top``), and the best label even when none passes."""
        from .decode import image_list

        items = image_list(images)
        scores = self.model.score_labels(self.model.encode_images(items))
        passing = self.model.labels_above_threshold(scores, top=top)
        thresholds = thresholds_to_json(self.model.thresholds)
        where = dict(zip(self.model.labels, thresholds))
        results = []
        for item, row, chosen in zip(items, scores, passing):
            j = int(row.argmax())
            best = LabelScore(self.model.labels[j], float(row[j]), thresholds[j])
            results.append(TagResult(_shown_image(item), [LabelScore(l, s, where[l]) for l, s in chosen], best))
        return results

    def close(self) -> None:
        for index in distinct_indexes(self.indexes):
            index.close()
        self.indexes = {}


__all__ = ["Searcher", "SearchResult", "LabelScore", "TagResult", "Hit"]
