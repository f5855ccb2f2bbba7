"""The demo's indexes of the photos and the tag texts, filled and searched through the runtime's library
core (``dagnn_runtime.ingest``, ``dagnn_runtime.indexes`` and the ``Searcher``), the same code ``dagnn
index``, ``dagnn query`` and the server use (``stages.query_stage`` makes the ``Searcher``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from dagnn_runtime.constants import MODALITIES
from dagnn_runtime.indexes import locate_index, open_index
from dagnn_runtime.ingest import ingest, sources_from_data

from ..progress import Progress


def clear_indexes(index_dir: Path) -> None:
    """Drop the indexes of an earlier demo run (they belong to the old bundle's embedding space).
    Only locations that are dagnn indexes are removed, nothing else the user may keep there."""
    for modality in MODALITIES:
        found = locate_index(index_dir / modality)
        if found is not None:
            found = Path(found)
            shutil.rmtree(found) if found.is_dir() else found.unlink()


def build_indexes(model, data: Path, index_dir: Path, log) -> dict:
    """A fresh index per modality of the data set folder ``data``; returns {modality: open index}."""
    clear_indexes(index_dir)
    indexes = {}
    for src in sources_from_data(data, MODALITIES):
        index = open_index(index_dir / src.modality, model=model, modality=src.modality, create=True)
        with Progress(len(src.ids), f"{src.modality} index", log=log) as bar:
            ingest(model, src, index, batch_size=32, save_every=10 ** 9, on_progress=bar.advance)
        index.save()
        indexes[src.modality] = index
    return indexes


def search(searcher, k: int, **query) -> list[dict]:
    """The top ``k`` items for ``query`` (``Searcher.search``'s image=, text=, target=), as the rows the
    demo's tables and report show."""
    return [{"image": h.metadata.get("path"), "tags": h.metadata.get("tags", []),
             "labels": h.metadata.get("labels", []), "score": float(h.score), "id": h.id}
            for h in searcher.search(k=k, **query).hits]
