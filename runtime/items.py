"""The one item record that every write path stores (``ingest``, the HTTP API, ``--from-embeddings``), so
that what an index can answer, the ``labels`` filter above all, never depends on how an item was added.

A record is the caller's metadata plus:
    predicted_labels  the labels whose score passes the bundle's calibrated threshold, best first (always)
    labels            the data set's labels, where known (dropped when empty)
    path              an image item's file (a photo's path; an upload's stored copy)
    text, tags        a text item's text as given and its tags in the vocabulary
"""
from __future__ import annotations

import numpy as np

REQUIRED = ("predicted_labels",)


def item_record(meta: dict, predicted_labels) -> dict:
    record = dict(meta or {})
    record["predicted_labels"] = list(predicted_labels)
    if not record.get("labels"):
        record.pop("labels", None)
    return record


def item_records(model, modality: str, items, vectors: np.ndarray, metadata) -> list:
    """Records of ``items`` (image paths/bytes or texts) of ``modality``, embedded as ``vectors`` by ``model``."""
    predicted = model.labels_above_threshold(model.score_labels(vectors))
    records = []
    for item, meta, passing in zip(items, metadata, predicted):
        meta = dict(meta or {})
        if modality == "text":
            if isinstance(item, str):
                meta.setdefault("text", item)
            meta.setdefault("tags", model.parse_text(item)[0])
        records.append(item_record(meta, [label for label, _ in passing]))
    return records


def lacks_fields(record: dict) -> bool:
    """Whether a stored record predates this schema (``dagnn index upgrade`` adds what is missing)."""
    return any(key not in record for key in REQUIRED)


def upgrade(model, index) -> int:
    """Give the items of an index made by an older dagnn what every record now has (predicted labels from
    their stored vectors; a text's tags), batch by batch: run again after an interruption to finish.
    Returns how many items changed."""
    index.check_space(model, what=f"bundle {model.source}")

    def fix(ids, vectors, metadata):
        predicted = model.labels_above_threshold(model.score_labels(vectors))
        return [item_record(meta, [label for label, _ in passing]) if lacks_fields(meta) else None
                for meta, passing in zip(metadata, predicted)]

    return index.rewrite(fix)
