"""Checks of what callers hand an index (ids, vectors, metadata, search options), the same for every
backend, so that each refuses bad input with the same one-line message and changes nothing."""
from __future__ import annotations

import json
import unicodedata

import numpy as np

from ..errors import InputError, positive_int, shorten

# One item's metadata as stored: what ``additions`` accepts and ``hnsw_graph.read_record`` reads back are
# the same bounds, so an index never holds a record its own readers refuse.
RECORD_MAX_BYTES = 64 << 10
RECORD_MAX_DEPTH = 16


ID_ALLOWED = ("ids may hold letters, marks, numbers, punctuation, symbols and spaces; not control, format, "
              "surrogate, private-use or unassigned characters, nor line or paragraph separators")
_CATEGORY_NAMES = {"Cc": "a control character", "Cf": "a format character", "Cs": "a surrogate",
                   "Co": "a private-use character", "Cn": "an unassigned code point",
                   "Zl": "a line separator", "Zp": "a paragraph separator"}


def item_key(item_id, max_bytes: int | None = None) -> str:
    """An id as its string key, in Unicode NFC (the precomposed and the decomposed spelling of "é" are one
    id, in every add, remove, ``present`` and ``metadata``); ids holding characters that are invisible or
    that change how text around them is shown (controls, bidi overrides, zero-width characters, ...) are
    refused. ``max_bytes`` is a backend's limit on a key's UTF-8 length (Milvus)."""
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int, np.integer)):
        raise InputError(f"ids must be strings (or integers), got {type(item_id).__name__}")
    key = str(item_id)
    if not key:
        raise InputError("ids must not be empty")
    if not (key.isascii() and key.isprintable()):  # the common case needs neither step
        key = _checked_characters(unicodedata.normalize("NFC", key))
    if max_bytes is not None and len(key.encode()) > max_bytes:
        raise InputError(f"id {key[:80]!r}… is longer than {max_bytes} bytes")
    return key


def _checked_characters(key: str) -> str:
    """``key`` when every character may stand in an id (``ID_ALLOWED``), else an InputError naming the first
    other one by its code point (the id itself is quoted escaped, so the message shows what it holds)."""
    for ch in key:
        # isprintable is False exactly for categories C* and Z* (but the ASCII space); spaces (Zs) are allowed
        if not ch.isprintable() and unicodedata.category(ch) != "Zs":
            kind = _CATEGORY_NAMES.get(unicodedata.category(ch), "not allowed")
            name = unicodedata.name(ch, "")
            raise InputError(f"id {shorten(key)} contains U+{ord(ch):04X} ({name + ', ' if name else ''}{kind}): "
                             f"{ID_ALLOWED}")
    return key


def item_keys(ids, max_bytes: int | None = None) -> list:
    """One id or several, as strings."""
    if isinstance(ids, (str, int, np.integer)):
        return [item_key(ids, max_bytes)]
    return [item_key(i, max_bytes) for i in ids]


def unit_vectors(vectors, dim: int, what: str) -> np.ndarray:
    """``(n, dim)`` float32 rows scaled to length 1 (cosine = inner product); refuses NaN and zeros."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != dim:
        raise InputError(f"{what} have shape {np.shape(vectors)}, this index holds {dim}-d vectors")
    if not np.isfinite(v).all():
        raise InputError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError(f"{what} contain an all-zero vector (its cosine is undefined)")
    return np.ascontiguousarray(v / norms)


def additions(vectors, ids, metadata, dim: int, max_id_bytes: int | None = None) -> tuple:
    """(keys, unit vectors, metadata JSON texts) of items to add, or InputError naming the first problem."""
    v = unit_vectors(vectors, dim, "vectors to add")
    keys = item_keys(ids, max_id_bytes)
    if len(keys) != len(v):
        raise InputError(f"{len(v)} vectors but {len(keys)} ids")
    metadata = [{}] * len(keys) if metadata is None else list(metadata)
    if len(metadata) != len(keys):
        raise InputError(f"{len(keys)} ids but {len(metadata)} metadata records")
    records = [record_text(key, meta) for key, meta in zip(keys, metadata)]
    seen = set()
    dup = next((k for k in keys if k in seen or seen.add(k)), None)
    if dup is not None:
        raise InputError(f"id {dup!r:.80} appears twice in the items to add")
    return keys, v, records


def record_text(key: str, meta) -> str:
    """An item's metadata as the JSON text stored, within ``RECORD_MAX_*`` and encodable as UTF-8."""
    if not isinstance(meta, dict):
        raise InputError(f"metadata of id {key!r:.80} must be a dict, got {type(meta).__name__}")
    depth = _depth(meta)
    if depth > RECORD_MAX_DEPTH:
        raise InputError(f"metadata of id {key!r:.80} is nested {depth} levels deep, more than {RECORD_MAX_DEPTH}")
    try:
        text = json.dumps(meta, ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # before ValueError, its base class
        raise InputError(f"metadata of id {key!r:.80} holds a lone surrogate (U+{ord(exc.object[exc.start]):04X}), "
                         "which is not text") from exc
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata of id {key!r:.80} is not plain JSON ({str(exc)[:120]})") from exc
    if size > RECORD_MAX_BYTES:
        raise InputError(f"metadata of id {key!r:.80} is {size} bytes as JSON, more than {RECORD_MAX_BYTES}")
    return text


def _depth(value) -> int:
    """Nesting depth of lists and dicts, counted without recursion (a hostile value may be very deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            deepest = max(deepest, level)
            if level > RECORD_MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def search_options(k, ef, labels) -> frozenset | None:
    """Check ``k`` and ``ef``; the ``labels`` filter as a set of names (None: no filter)."""
    positive_int(k, "k")
    if ef is not None:
        positive_int(ef, "ef")
    if labels is None:
        return None
    wanted = [labels] if isinstance(labels, str) else list(labels)
    if not wanted or not all(isinstance(x, str) and x for x in wanted):
        raise InputError(f"labels must be a non-empty list of label names, got {labels!r}"[:120])
    return frozenset(wanted)
