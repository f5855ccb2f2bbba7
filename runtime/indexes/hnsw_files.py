"""The on-disk form of an hnsw index: one folder, written atomically (temporary folder + rename) so that
readers see the old index or the new one, never a mix::

    graph.hnsw    hnswlib's graph (vectors stored L2-normalised, inner-product space)
    index.json    format, dim, space, embedding_space, modality, HNSW parameters, the graph's SHA-256
                  and ``items``: per internal label ``[id, metadata]``, or null for a removed item
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from ..atomic import replace_dir, temp_dir_beside
from ..bundle import file_sha256
from ..errors import IndexFileError

FORMAT = "dagnn-index"
FORMAT_VERSION = 1
GRAPH_FILE = "graph.hnsw"
META_FILE = "index.json"


def stamp(folder: Path):
    """Identity of ``folder/index.json``: a save replaces the folder, so the inode and times change."""
    try:
        st = (Path(folder) / META_FILE).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def write_folder(folder: Path, save_graph: Callable[[Path], None], meta: dict):
    """Write ``save_graph(path)``'s graph and ``meta`` (plus format and the graph's SHA-256) to ``folder``,
    replacing an index there; returns the new ``stamp``. Refuses to replace anything but an index."""
    folder = Path(folder)
    if folder.exists() and not (folder / META_FILE).is_file() and (not folder.is_dir() or any(folder.iterdir())):
        raise IndexFileError(f"refusing to replace {folder}: it exists and is not an index folder")
    tmp = temp_dir_beside(folder)
    try:
        save_graph(tmp / GRAPH_FILE)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta,
                "graph": {"file": GRAPH_FILE, "sha256": file_sha256(tmp / GRAPH_FILE)}}
        with open(tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stamp(folder)


def read_folder(folder: Path) -> tuple:
    """``(meta, graph path, stamp)`` of the index at ``folder``, its format checked and its graph file
    matching the recorded SHA-256."""
    folder = Path(folder)
    meta_path, graph_path = folder / META_FILE, folder / GRAPH_FILE
    if not folder.is_dir():
        raise IndexFileError(f"index {folder}: no such folder")
    if not meta_path.is_file():
        raise IndexFileError(f"index {folder}: missing {META_FILE} (not an index folder?)")
    found = stamp(folder)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise IndexFileError(f"index {folder}: {META_FILE} is malformed ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise IndexFileError(f"index {folder}: {META_FILE} format is {got!r}, not {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexFileError(f"index {folder}: format_version {meta.get('format_version')!r} "
                             f"is not supported (supported: {FORMAT_VERSION})")
    if not graph_path.is_file():
        raise IndexFileError(f"index {folder}: missing {GRAPH_FILE}")
    recorded = meta.get("graph", {}).get("sha256") if isinstance(meta.get("graph"), dict) else None
    if file_sha256(graph_path) != recorded:
        raise IndexFileError(f"index {folder}: {GRAPH_FILE} does not match the SHA-256 in {META_FILE} "
                             "(changed or corrupt)")
    return meta, graph_path, found
