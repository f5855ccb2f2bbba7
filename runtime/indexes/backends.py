"""The index backends, one entry each: which locations a backend claims, where its index of a modality is,
and how it opens one. ``IndexSet`` picks the entry once; no other code branches on a backend's name.

A backend is added here: a class with ``name``, ``claims``, ``locate``, ``place``, ``open``, ``missing``
and ``uploads``, appended to ``BACKENDS`` before the catch-all ``hnsw`` (and named in the
location help of ``cli/options.py`` and the error of ``backend_for``).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import IndexFileError, InputError


class HnswBackend:
    """A folder holding ``index.db`` (hnswlib graph + SQLite store), or a parent of ``image/`` and ``text/``."""

    name = "hnsw"

    def claims(self, location: str) -> bool:
        return "://" not in location

    def locate(self, location: str, modality: str | None, options: dict):
        """``location`` itself when it is an index, else ``location/<modality>`` when that is one."""
        path = Path(location)
        if _is_hnsw(path):
            return path
        if modality is not None and _is_hnsw(path / modality):
            return path / modality
        return None

    def place(self, location: str, modality: str | None, nested: bool):
        """Where a new index of ``modality`` goes: ``location/<modality>`` when ``nested`` (one location
        for both modalities), else ``location`` itself."""
        return Path(location) / modality if nested and modality else Path(location)

    def missing(self, location: str, modality: str | None, modalities=()) -> str:
        subs = [modality] if modality else list(modalities)
        expected = " or ".join([f"{location}/index.db"] + [f"{location}/{m}/index.db" for m in subs])
        return f"no {modality + ' ' if modality else ''}index at {location} (expected {expected})"

    def open(self, where, *, modality, model, create: bool, options: dict):
        from .hnsw import HnswIndex

        path = Path(where)
        if _is_hnsw(path):
            index = HnswIndex.load(path)
            try:
                if modality is not None and index.modality not in (None, modality):
                    raise InputError(f"index {path} holds {index.modality} items, not {modality} items")
                if model is not None:
                    index.check_space(model, what=f"bundle {getattr(model, 'source', '')}".strip())
            except BaseException:
                index.close()
                raise
            return index
        if not create:
            raise IndexFileError(self.missing(str(path), None))
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise IndexFileError(f"refusing to create an index at {path}: it exists and is not an index folder")
        if model is None:
            raise InputError("creating an index needs the model whose embeddings it will hold")
        options = {k: v for k, v in options.items() if k in ("M", "ef_construction", "ef", "capacity")}
        options.setdefault("capacity", 1024)
        return HnswIndex.for_model(model, modality, location=path, **options)

    def uploads(self, location: str, single: bool) -> Path:
        """Where a server keeps images added over HTTP: inside a parent of indexes, beside a single one."""
        path = Path(location)
        return path.with_name(path.name + ".uploads") if single else path / "uploads"


class MilvusBackend:
    """A Milvus Lite ``*.db`` path or a server URI, one collection per modality."""

    name = "milvus"

    def claims(self, location: str) -> bool:
        from .milvus_schema import is_milvus_location

        return is_milvus_location(location)

    def locate(self, location: str, modality: str | None, options: dict):
        from .milvus_schema import collection_exists

        return location if collection_exists(location, modality, token=options.get("token")) else None

    def place(self, location: str, modality: str | None, nested: bool):
        return location  # the modality picks the collection

    def missing(self, location: str, modality: str | None, modalities=()) -> str:
        from .milvus_schema import collection_name, shown

        names = [collection_name(modality=m) for m in ([modality] if modality else modalities or [None])]
        return f"no dagnn index at Milvus {shown(location)} (no collection {' or '.join(names)}; build the index first)"

    def open(self, where, *, modality, model, create: bool, options: dict):
        from .milvus import MilvusIndex

        options = {k: v for k, v in options.items() if k != "capacity"}  # Milvus grows on its own
        return MilvusIndex.open(str(where), modality=modality, model=model, create=create, **options)

    def uploads(self, location: str, single: bool) -> Path:
        if "://" in location:
            raise InputError("a Milvus server keeps no files: give the folder for uploaded images (--uploads)")
        path = Path(location)
        return path.with_name(path.name + ".uploads")


BACKENDS = (MilvusBackend(), HnswBackend())  # the first that claims a location opens it


def backend_for(location: str):
    for backend in BACKENDS:
        if backend.claims(location):
            return backend
    raise InputError(f"no index backend for {location[:80]!r}: use a folder (hnsw), a *.db path or an "
                     "http(s):// URI (milvus)")


def backend_named(name: str):
    for backend in BACKENDS:
        if backend.name == name:
            return backend
    raise InputError(f"unknown index backend {name!r} (available: {', '.join(b.name for b in BACKENDS)})")


def _is_hnsw(path: Path) -> bool:
    """A folder with an index store, or a version-1 index folder (converted when opened)."""
    from ..atomic import recover
    from .legacy import is_v1
    from .store_file import is_store

    if not path.exists():  # a version-1 save killed between its two renames left it aside as .NAME.old-*
        recover(path)
    return is_store(path) or is_v1(path)
