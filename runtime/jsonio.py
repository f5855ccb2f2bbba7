"""Reading JSON that users or other programs hand us, with bounded size and nesting.

Python's parser recurses once per nesting level, so ``[[[[…]]]]`` ten thousand deep ends in "maximum
recursion depth exceeded" (or worse), and a huge file is read whole before anything is checked. Every JSON
the runtime reads (manifests, data set records, split files, index metadata) goes through here: the size is
checked before reading, the depth is counted before parsing, duplicate object keys are refused (otherwise
the last one silently wins), and every failure is one ``DagnnError`` naming the file and the problem.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import DagnnError, InputError

MAX_DEPTH = 64
MAX_BYTES = 64 << 20

_CHUNK = 1 << 20  # characters scanned at a time: memory stays bounded whatever the text's size


def nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting outside string literals, counted without recursion, in time linear
    in the text (a regular expression over string literals backtracks quadratically on unterminated ones
    like ``"\\"\\"…``) and with memory bounded by ``_CHUNK``.

    A quote is a string delimiter unless an odd run of backslashes precedes it. Up to the first syntax
    error the count is exactly the parser's recursion depth, so the maximum over the whole text bounds it.
    """
    deepest = depth = 0
    inside, backslashes = 0, 0  # inside a string (0/1); backslashes ending the previous chunk
    for start in range(0, len(text), _CHUNK):
        codes = np.frombuffer(text[start:start + _CHUNK].encode("utf-8", "surrogatepass"), dtype=np.uint8)
        index = np.arange(len(codes), dtype=np.int64)
        is_bs = codes == 0x5C
        last_other = np.maximum.accumulate(np.where(is_bs, -1, index))
        run = index - last_other + np.where(last_other < 0, backslashes, 0)  # backslashes ending at each byte
        before = np.empty_like(run)
        before[0], before[1:] = backslashes, run[:-1]
        quotes = np.cumsum((codes == 0x22) & (before % 2 == 0), dtype=np.int64)
        outside = (quotes + inside) % 2 == 0
        steps = (((codes == 0x5B) | (codes == 0x7B)) & outside).astype(np.int64)
        steps -= ((codes == 0x5D) | (codes == 0x7D)) & outside
        levels = depth + np.cumsum(steps)
        deepest = max(deepest, int(levels.max(initial=depth)))
        depth, inside, backslashes = int(levels[-1]), int((inside + quotes[-1]) % 2), int(run[-1])
    return deepest


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key[:80]!r}" + ("…" if len(key) > 80 else ""))
        obj[key] = value
    return obj


def loads(data, what: str, *, error: type[DagnnError] = InputError, max_bytes: int = MAX_BYTES,
          max_depth: int = MAX_DEPTH):
    """Parse ``data`` (str or UTF-8 bytes); ``what`` names it in messages (e.g. ``"manifest.json of …"``)."""
    if len(data) > max_bytes:
        raise error(f"{what}: {len(data)} bytes of JSON, more than the {max_bytes}-byte limit")
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what}: not UTF-8 text (byte {exc.start})") from exc
    # Depth cannot exceed the number of opening brackets: most texts need no scan at all.
    depth = 0 if data.count("[") + data.count("{") <= max_depth else nesting_depth(data)
    if depth > max_depth:
        raise error(f"{what}: JSON nested {depth} levels deep, more than the limit of {max_depth}")
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise error(f"{what}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from exc
    except ValueError as exc:  # from _no_duplicates
        raise error(f"{what}: not valid JSON ({exc})") from exc


def load_file(path, what: str | None = None, *, error: type[DagnnError] = InputError,
              max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH):
    """Read and parse the JSON file at ``path``: size checked before reading, then ``loads``."""
    path = Path(path)
    what = what or str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except IsADirectoryError as exc:
        raise error(f"{what}: is a directory, not a JSON file") from exc
    except FileNotFoundError as exc:
        raise error(f"{what}: no such file") from exc
    except OSError as exc:
        raise error(f"{what}: cannot read ({exc.strerror or exc})") from exc
    return loads(data, what, error=error, max_bytes=max_bytes, max_depth=max_depth)


def expect(value, kind: type, what: str, *, error: type[DagnnError] = InputError):
    """``value`` if it is a ``kind`` (e.g. the top-level object a file must hold), else one clear error
    instead of a later "'str' object has no attribute 'get'"."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = {dict: "a JSON object", list: "a JSON array", str: "a string", int: "an integer"}
        raise error(f"{what}: expected {names.get(kind, kind.__name__)}, found {type(value).__name__}")
    return value
