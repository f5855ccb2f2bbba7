"""What to embed: a folder of photos, a list file of paths, or a dagnn data set folder → ``Item``s.

Ids are stable strings (relative paths) so that a shard's items, and hence the resume, do not depend on
where the folder is mounted. Missing or unreadable files are not refused here: they become error rows.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..constants import IMAGE_SUFFIXES
from ..errors import DatasetError, InputError
from .shards import Item


def items_from_images(folder) -> list:
    """Every image file under ``folder`` (recursive); id = its path relative to ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"images folder {str(folder)[:80]} does not exist")
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return [Item(p.relative_to(folder).as_posix(), str(p.resolve())) for p in files]


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
    """The rows of a data set folder that have an image; id = the image path, labels = the row's labels."""
    data_dir = Path(data_dir)
    pairs = data_dir / "pairs.jsonl"
    if not pairs.is_file():
        raise DatasetError(f"data folder {str(data_dir)[:80]} has no pairs.jsonl")
    items = []
    with open(pairs, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                if rec.get("image"):
                    items.append(Item(str(rec["image"]), str((data_dir / rec["image"]).resolve()),
                                      tuple(str(x) for x in rec.get("labels") or ())))
            except (ValueError, AttributeError, TypeError) as exc:
                raise DatasetError(f"{pairs}: line {n} is not a JSON record with 'image' ({exc})") from exc
    return items
