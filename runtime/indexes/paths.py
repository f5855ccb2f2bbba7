"""Photo paths stored relative to the index folder, so that an index moved together with its photos still
serves them, and the working directory of the command that indexed them never matters.

A relative path the caller gives is made absolute against the caller's working directory first (what the
caller meant), then stored relative to the index. Reading makes it absolute against the index's folder.
Indexes made before this (their store lacks ``paths = index-relative``) hold paths relative to whatever
folder they were built from: read as stored until ``dagnn index upgrade`` rewrites them.
"""
from __future__ import annotations

import os
from pathlib import Path

RELATIVE = "index-relative"   # the store meta value of ``paths`` that says stored paths start at the index


def stored(meta: dict, base: Path | None) -> dict:
    """``meta`` with its ``path`` as it is stored: relative to ``base``, or absolute without one."""
    path = meta.get("path")
    if not isinstance(path, str) or not path:
        return meta
    absolute = os.path.abspath(path)
    if base is None:
        return {**meta, "path": absolute}
    try:
        return {**meta, "path": Path(os.path.relpath(absolute, os.path.abspath(base))).as_posix()}
    except ValueError:  # another drive (Windows): no relative path exists
        return {**meta, "path": absolute}


def shown(meta: dict, base: str | Path | None) -> dict:
    """``meta`` as readers get it: a stored relative ``path`` made absolute against ``base`` (an absolute
    folder given as a string is used as it is: this runs for every search hit)."""
    path = meta.get("path")
    if base is None or not isinstance(path, str) or not path or os.path.isabs(path):
        return meta
    root = base if isinstance(base, str) else os.path.abspath(base)
    meta["path"] = os.path.normpath(os.path.join(root, path))
    return meta


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (through links too, when both exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))
