"""How a text becomes the bundle vocabulary's tag ids: parsing, the size limits, and the one-line refusal
that names the closest known tags. Kept apart from the encoders so that the server and the ingest path
check a text exactly as ``encode_texts`` does, without encoding it."""
from __future__ import annotations

import difflib

from .dataset import tokenize
from .errors import InputError, shorten

MAX_TEXT_CHARS = 10_000
MAX_TAGS = 512


class Vocabulary:
    """A bundle's tags in their vocabulary order (the text graph's input positions)."""

    def __init__(self, tags: tuple):
        self.tags = tags
        self._index = {t: j for j, t in enumerate(tags)}

    def parse(self, item) -> tuple[list, list]:
        """A string (``"sky, clouds"``) or a list of tags → (tags in the vocabulary, tags not in it)."""
        if isinstance(item, str):
            parts = [item]
        elif isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item):
            parts = item
        else:
            raise InputError(f"a text must be a string or a list of tag strings, got {type(item).__name__}")
        length = sum(len(p) for p in parts) + max(0, len(parts) - 1)
        if length > MAX_TEXT_CHARS or len(parts) > MAX_TAGS:
            raise InputError(f"text {_shown(parts)} is too long: at most {MAX_TEXT_CHARS} characters and "
                             f"{MAX_TAGS} tags")
        tags = list(dict.fromkeys(tok for p in parts for tok in tokenize(p)))
        if len(tags) > MAX_TAGS:
            raise InputError(f"text {_shown(parts)} has {len(tags)} distinct tags, more than the limit of {MAX_TAGS}")
        known = [t for t in tags if t in self._index]
        return known, [t for t in tags if t not in self._index]

    def closest(self, tag: str, n: int = 3) -> list:
        return difflib.get_close_matches(tag, self.tags, n=n, cutoff=0.6)

    def ids(self, items) -> list:
        """Texts → per text the vocabulary indices of its known tags; a text with no known tag is refused."""
        items = [items] if isinstance(items, str) else list(items)
        ids = []
        for i, item in enumerate(items):
            known, unknown = self.parse(item)
            if known:  # the common case: no message to build (a query's whole Python cost is some 0.1 ms)
                ids.append([self._index[t] for t in known])
                continue
            where = f"text {shorten(item)}" if len(items) == 1 else f"text {i} ({shorten(item)})"
            if not unknown:
                raise InputError(f"{where} is empty: give at least one tag, e.g. 'sky, clouds'")
            hints = []
            for tag in unknown[:5]:
                close = self.closest(tag[:100])
                shown = shorten(tag, 40)
                hints.append(f"{shown} (closest: {', '.join(close)})" if close else f"{shown} (no close tag)")
            if len(unknown) > 5:
                hints.append(f"and {len(unknown) - 5} more")
            raise InputError(f"{where}: no tag is in the bundle vocabulary of {len(self.tags)} tags: "
                             + "; ".join(hints))
        return ids


def _shown(parts: list) -> str:
    """A text as an error message names it; built only when a text is refused."""
    return shorten(", ".join(parts[:MAX_TAGS + 1]))
