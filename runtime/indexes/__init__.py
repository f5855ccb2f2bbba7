"""Index backends behind one protocol (``base.VectorIndex``), and one way in: ``IndexSet``, the indexes of a
deployment at one location. A folder is an hnswlib index, or a parent holding ``image/`` and ``text/``; a
``*.db`` Milvus Lite path or an ``http(s)://``/``tcp://`` URI is a Milvus server's collections, one per
modality (``backends``). ``open_index`` and ``locate_index`` are the one-index shorthands of ``IndexSet``.
"""
from __future__ import annotations

from pathlib import Path

from ..constants import MODALITIES
from ..errors import IndexFileError, InputError, shorten
from .backends import BACKENDS, backend_for, backend_named
from .base import Hit, VectorIndex

__all__ = ["Hit", "VectorIndex", "IndexSet", "locate_index", "open_index", "BACKENDS"]


class IndexSet:
    """Where a deployment's indexes are and which backend opens them, resolved once: the CLI, the server and
    the ``Searcher`` take one and never look at the location themselves.

    ``options``: the backend's (hnsw: ``M``, ``ef_construction``, ``ef``, ``capacity`` for a new index;
    milvus: ``token``, ``prefix``, ``index_type``, ...); ``backend``: a name, to refuse a location that
    another backend claims."""

    def __init__(self, location, *, backend: str | None = None, **options):
        if isinstance(location, IndexSet):
            raise InputError("IndexSet takes a location, not another IndexSet")
        self.location = str(location)
        if not self.location.strip():
            raise InputError("the index location is empty")
        self.backend = backend_for(self.location)
        if backend is not None and backend_named(backend) is not self.backend:
            raise InputError(f"{shorten(self.location, path=True)} is a {self.backend.name} location, not {backend}")
        self.options = {k: v for k, v in options.items() if v is not None}
        self._found: dict = {}

    def __repr__(self) -> str:
        return f"<IndexSet {self.backend.name} {self.location!r}>"

    def find(self, modality: str | None = None):
        """The location of the index of ``modality`` (the location itself when it is one index), or None."""
        _check_modality(modality)
        if modality not in self._found:
            self._found[modality] = self.backend.locate(self.location, modality, self.options)
        return self._found[modality]

    def is_single(self) -> bool:
        """Whether the location is one index (rather than a parent or a URI of one index per modality)."""
        return self.find(None) is not None

    def require(self) -> None:
        """Refuse a location that holds no index at all (one line naming what was looked for)."""
        if not self.is_single() and not self.present():
            raise InputError(self.backend.missing(self.location, None, MODALITIES))

    def present(self) -> list:
        """The modalities with an index here; one index that records no modality answers for both."""
        single = self.find(None)
        if single is not None:
            return []  # see open_all: its modality is known only once it is open
        return [m for m in MODALITIES if self.find(m) is not None]

    def open(self, modality: str | None = None, *, model=None, create: bool = False, nested: bool = False,
             **options):
        """The index of ``modality`` here; with ``create``, a new empty one when there is none (at
        ``location/<modality>`` when ``nested``, or when the location already holds other modalities' indexes).
        With ``model``, an index of another embedding space is refused (MismatchError); with ``modality``,
        an index of the other modality is refused."""
        _check_modality(modality)
        found = self.find(modality)
        if found is None:
            if not create:
                raise IndexFileError(self.backend.missing(self.location, modality))
            self._found.pop(modality, None)  # being created: look again next time
            found = self.backend.place(self.location, modality, nested or self.present() != [])
        return self.backend.open(found, modality=modality, model=model, create=create,
                                 options={**self.options, **options})

    def open_all(self, only=None) -> dict:
        """Modality -> open index, for each modality in ``only`` (default: all) that has one here; one index
        that records no modality is returned for both. Raises when there is none."""
        wanted = list(MODALITIES if only is None else only)
        single = self.find(None)
        if single is not None:
            ix = self.backend.open(single, modality=None, model=None, create=False, options=self.options)
            return {m: ix for m in ([ix.modality] if ix.modality else MODALITIES)}
        opened = {}
        try:
            for m in wanted:
                if self.find(m) is not None:
                    opened[m] = self.open(m)
        except BaseException:
            for ix in opened.values():
                ix.close()
            raise
        if not opened:  # the location given is wrong (as for ``require``), not an index file
            raise InputError(self.backend.missing(self.location, None, wanted))
        return opened

    def uploads(self) -> Path:
        """Where a server keeps the images added over HTTP, unless told otherwise."""
        return self.backend.uploads(self.location, self.is_single())



def _check_modality(modality) -> None:
    if modality is not None and modality not in MODALITIES:
        raise InputError(f"modality must be one of {', '.join(MODALITIES)}, not {shorten(modality)}")


def locate_index(location, modality: str | None = None):
    """``location`` itself when it is an index, else its index of ``modality``, else None."""
    return IndexSet(location).find(modality)


def open_index(location, *, model=None, modality: str | None = None, create: bool = False,
               backend: str | None = None, **options) -> VectorIndex:
    """The index at ``location`` (or its index of ``modality``); with ``create``, a new empty one there when
    none exists yet (``options``: ``M``, ``ef_construction``, ``ef``, ``capacity``; Milvus: ``token``, ...).
    With ``model``, an index of another embedding space is refused; with ``modality``, one of the other."""
    return IndexSet(location, backend=backend, **options).open(modality, model=model, create=create)
