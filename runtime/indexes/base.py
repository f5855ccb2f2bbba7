"""What every index backend offers, so that the engine, the CLI and a server never depend on one backend.

An index holds the items of one modality embedded by one bundle: a string id, the vector and a small JSON
metadata record per item (path or tags, labels), and the bundle's ``embedding_space``, so that it cannot be
searched with vectors of another model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Hit:
    """One search result: the item's id, its cosine similarity to the query, and its metadata."""

    id: str
    score: float
    metadata: dict = field(default_factory=dict)


@runtime_checkable
class VectorIndex(Protocol):
    """One modality's items of one embedding space (cosine similarity)."""

    modality: str | None
    embedding_space: str
    dim: int
    location: str

    def add(self, vectors, ids, metadata=None) -> None:
        """All-or-nothing; an id already present is refused."""

    def remove(self, ids) -> None:
        """An unknown id is refused and nothing changes."""

    def search(self, vectors, k: int = 10, *, labels=None, ef=None, exact=False) -> list[list[Hit]]:
        """Per query vector, the ``k`` best hits; ``labels`` keeps only items whose metadata ``labels`` or
        ``predicted_labels`` contain any of them."""

    def __len__(self) -> int: ...

    def __contains__(self, item_id) -> bool: ...

    def present(self, ids) -> set:
        """Those of ``ids`` that are in the index, in one look-up (a Milvus round trip per 1000 ids, not
        one per id)."""

    def metadata(self, item_id) -> dict: ...

    def rewrite(self, fix, batch: int = 500) -> int:
        """Give items new metadata, batch by batch, each batch committed: ``fix(ids, vectors, metadata)`` ->
        per item its new metadata, or None to leave it. Returns how many changed (``dagnn index upgrade``)."""

    def record_roots(self, folders) -> None:
        """Remember the photo folders items were indexed from."""

    def save(self) -> None:
        """Make pending changes durable at ``location``."""

    def refresh(self) -> None:
        """See changes other writers made since this index was opened."""

    def close(self) -> None: ...

    def check_space(self, model_or_space, what: str = "bundle") -> None:
        """Raise ``MismatchError`` for a bundle (or embedding_space string) of another space."""

    def info(self) -> dict: ...


def short_digest(digest: str) -> str:
    """A digest as messages show it: enough to tell two apart, short enough to read."""
    return f"{digest[:8]}…{digest[-4:]}"


def check_identity(where: str, space: str, digest: str | None, model_or_space, what: str = "bundle") -> None:
    """The one check that an index may be used with a bundle (or an embedding_space string): the same
    embedding space, and, when both sides know it, the same ``bundle_digest``. The space alone misses a
    bundle whose labels, thresholds or preprocessing were changed (the graphs, hence the space, are the
    same), so an index records the digest of the bundle that built it. Indexes made before that record
    none and are checked by space alone."""
    from ..errors import MismatchError

    given = getattr(model_or_space, "embedding_space", model_or_space)
    if given != space:
        raise MismatchError(f"{where} holds embeddings of space {space[:12]}…, the {what} produces space "
                            f"{str(given)[:12]}…: rebuild the index with this bundle")
    theirs = getattr(model_or_space, "bundle_digest", None)
    if digest and isinstance(theirs, str) and theirs and theirs != digest:
        raise MismatchError(f"{where} was built with bundle {short_digest(digest)}, not with {what} "
                            f"({short_digest(theirs)}): what changed is unknown, but the digest covers labels, "
                            "thresholds and preprocessing; rebuild the index with this bundle, or load the one "
                            "it was built with (--expect-digest; `dagnn index info` shows it)")
