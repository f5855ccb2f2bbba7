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

    def metadata(self, item_id) -> dict: ...

    def save(self) -> None:
        """Make pending changes durable at ``location``."""

    def refresh(self) -> None:
        """See changes other writers made since this index was opened."""

    def close(self) -> None: ...

    def check_space(self, model_or_space, what: str = "bundle") -> None:
        """Raise ``MismatchError`` for a bundle (or embedding_space string) of another space."""

    def info(self) -> dict: ...
