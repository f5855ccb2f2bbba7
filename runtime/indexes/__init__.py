"""Index backends behind one protocol (``base.VectorIndex``), and the two ways in: ``locate_index`` and
``open_index``. A folder is an hnswlib index (``hnsw.HnswIndex``); a ``*.db`` Milvus Lite path or an
``http(s)://``/``tcp://`` URI is a Milvus server's collections (``milvus.MilvusIndex``, one per modality)."""
from __future__ import annotations

from pathlib import Path

from ..constants import MODALITIES
from ..errors import IndexFileError, InputError
from .base import Hit, VectorIndex

BACKENDS = ("hnsw", "milvus")

__all__ = ["Hit", "VectorIndex", "locate_index", "open_index", "BACKENDS"]


def _is_hnsw(path: Path) -> bool:
    """A folder with an index store, or a version-1 index folder (converted when opened)."""
    from ..atomic import recover
    from .legacy import is_v1
    from .store_file import is_store

    if not path.exists():  # a version-1 save killed between its two renames left it aside as .NAME.old-*
        recover(path)

    return is_store(path) or is_v1(path)


def _is_milvus(location) -> bool:
    from .milvus_schema import is_milvus_location

    return is_milvus_location(location)


def locate_index(location, modality: str | None = None) -> Path | str | None:
    """``location`` itself when it is an index, else ``location/<modality>`` when that is one, else None.
    A Milvus location holds one collection per modality (token: $DAGNN_MILVUS_TOKEN)."""
    if _is_milvus(location):
        from .milvus import collection_exists

        return str(location) if collection_exists(location, modality) else None
    path = Path(location)
    if _is_hnsw(path):
        return path
    if modality is not None and _is_hnsw(path / modality):
        return path / modality
    return None


def _backend_of(location, backend: str | None) -> str:
    if backend is not None:
        if backend not in BACKENDS:
            raise InputError(f"unknown index backend {backend!r} (available: {', '.join(BACKENDS)})")
        return backend
    text = str(location)
    if _is_milvus(text):
        return "milvus"
    if "://" in text:
        raise InputError(f"no index backend for {text[:80]!r}: use a folder (hnsw), a *.db path or an "
                         "http(s):// URI (milvus)")
    return "hnsw"


def open_index(location, *, model=None, modality: str | None = None, create: bool = False,
               backend: str | None = None, **options) -> VectorIndex:
    """The index at ``location`` (or ``location/<modality>``); with ``create``, a new empty one there when
    none exists yet (``options``: ``M``, ``ef_construction``, ``ef``, ``capacity``; it is written by its
    first ``save()``). With ``model``, an index of another embedding space is refused (MismatchError);
    with ``modality``, an index of the other modality is refused."""
    from .hnsw import HnswIndex

    chosen = _backend_of(location, backend)
    if modality is not None and modality not in MODALITIES:
        raise InputError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    if chosen == "milvus":  # options: token, prefix, index_type, M, ef_construction, ef
        from .milvus import MilvusIndex

        return MilvusIndex.open(str(location), modality=modality, model=model, create=create, **options)
    found = locate_index(location, modality)
    if found is not None:
        index = HnswIndex.load(found)
        if modality is not None and index.modality not in (None, modality):
            raise InputError(f"index {found} holds {index.modality} items, not {modality} items")
        if model is not None:
            index.check_space(model, what=f"bundle {getattr(model, 'source', '')}".strip())
        return index
    path = Path(location)
    if not create:
        expected = f"{path}/index.db" + (f" or {path}/{modality}/index.db" if modality else "")
        raise IndexFileError(f"no {modality + ' ' if modality else ''}index at {path} (expected {expected})")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise IndexFileError(f"refusing to create an index at {path}: it exists and is not an index folder")
    if model is None:
        raise InputError("creating an index needs the model whose embeddings it will hold")
    options.setdefault("capacity", 1024)
    return HnswIndex.for_model(model, modality, location=path, **options)
