"""What to embed: a folder of photos, a list file of paths, or a dagnn data set folder → ``Item``s.

Ids are the ones ``dagnn index build`` gives the same items (``ingest``'s sources: relative paths for a
folder, the row for a data set), so shards load into an index under the same ids. Missing or unreadable
files are not refused here: they become error rows.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..ingest import source_from_images, sources_from_data
from .shards import Item


def items_from_images(paths) -> list:
    """Image files, or folders searched recursively; id = the path relative to the folder given."""
    src = source_from_images(paths)
    return [Item(i, str(Path(p).resolve())) for i, p in zip(src.ids, src.items)]


def items_from_list(list_file) -> list:
    """One path per line (blank lines and ``#`` comments skipped), relative to the list file's folder;
    id = the line as written."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise InputError(f"list file {str(list_file)[:80]} does not exist")
    base = list_file.resolve().parent
    items = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            items.append(Item(line, str(base / line)))
    return items


def items_from_data(data_dir) -> list:
    """The rows of a data set folder that have an image; id = the row, labels = the row's labels."""
    src = sources_from_data(data_dir, ["image"])[0]
    return [Item(i, str(Path(p).resolve()), tuple(m.get("labels", ()))) for i, p, m in zip(src.ids, src.items, src.meta)]
