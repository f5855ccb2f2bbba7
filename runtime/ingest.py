"""Filling an index: the items to add (``Source``) and ``ingest``, which encodes and adds those not yet in
the index, saving as it goes so that an interrupted run resumes where it stopped.

An unreadable photo or a text without a known tag is skipped and reported, never fatal: one bad file
must not cost a night of indexing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .constants import IMAGE_SUFFIXES, MODALITIES
from .errors import InputError, positive_int, shorten
from .items import item_records

log = logging.getLogger(__name__)


@dataclass
class Source:
    """Items of one modality to put in an index: ids, what to encode (image paths or texts), metadata."""

    modality: str
    ids: list = field(default_factory=list)
    items: list = field(default_factory=list)
    meta: list = field(default_factory=list)
    roots: list = field(default_factory=list)   # the photo folders given (the index records them)


@dataclass
class IngestReport:
    index: str             # location of the index
    modality: str
    added: int
    already_present: int   # ids of the source the index held before
    skipped: list          # one line per unusable item, naming it
    duplicate_ids: int     # repeated ids within the source (only the first one counts)
    items: int             # items in the index afterwards


def sources_from_data(data_dir, modalities=MODALITIES) -> list:
    """Photos of a data set folder (id = row) and the tag texts of all its pairs (same ids)."""
    from .dataset import Dataset

    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise InputError(f"modality must be image or text, not {shorten(unknown[0])}")
    ds = Dataset.load(data_dir)
    out = []
    if "image" in modalities:
        src = Source("image", roots=[ds.root])
        for i in ds.with_images():
            pair = ds.pairs[i]
            src.ids.append(str(pair.row))
            src.items.append(ds.image_path(i))
            src.meta.append({"path": str(ds.image_path(i)), "labels": list(pair.labels)})
        out.append(src)
    if "text" in modalities:
        src = Source("text")
        for pair in ds.pairs:
            src.ids.append(str(pair.row))
            src.items.append(list(pair.tags))
            src.meta.append({"tags": list(pair.tags), "labels": list(pair.labels)})
        out.append(src)
    return out


def source_from_images(paths) -> Source:
    """Image files, or folders searched recursively; ids are paths relative to the folder given (a file's
    id is its name). Two files under one id are refused by ``ingest``, naming both."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    src = Source("image")
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {path}")
            pairs = [(p.relative_to(path).as_posix(), p) for p in files]
            src.roots.append(path)
        elif path.is_file():
            pairs = [(path.name, path)]
            src.roots.append(path.parent)
        else:
            raise InputError(f"image file or folder {path} does not exist")
        for item_id, p in pairs:
            src.ids.append(item_id)
            src.items.append(p)
            src.meta.append({"path": str(p)})
    return src


def source_from_texts(path) -> Source:
    """One text per non-empty line, ``ID<TAB>text`` or just the text (id = its line number)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"text file {path} does not exist")
    src = Source("text")
    # lines end at "\n" only: splitlines() would also split at U+2028, U+0085 and form feeds inside a text,
    # making one line two items; a byte-order mark (utf-8-sig) is not part of the first id
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        item_id, text = line.split("\t", 1) if "\t" in line else (str(lineno), line)
        src.ids.append(item_id.strip())
        src.items.append(text.strip())
        src.meta.append({"text": text.strip()})
    if not src.ids:
        raise InputError(f"{path} holds no text")
    return src


def _check_same(source: Source, item_id: str, known: dict, new: dict, how: str) -> None:
    """Refuse a second file under an id (e.g. ``a/photo.jpg`` and ``b/photo.jpg`` given as folders ``a``
    and ``b``): it would be skipped as "already present" and never indexed."""
    from .indexes.paths import same_file

    old, path = known.get("path"), new.get("path")
    if source.modality == "image" and isinstance(old, str) and isinstance(path, str) and not same_file(old, path):
        raise InputError(f"id {shorten(item_id)}: {shorten(path, path=True)} and {shorten(old, path=True)} "
                         f"({how}) have the same id; give each folder its own index, or rename one file")


def _batches(model, src: Source, todo: list, batch_size: int):
    """Encode the items at positions ``todo`` batch by batch: yields (items done, positions encoded, their
    embeddings, problem lines). Images are decoded one batch ahead, in threads (``preprocess.iter_pixels``)."""
    if src.modality == "image":
        items = [src.items[pos] for pos in todo]
        from .preprocess import iter_pixels  # here: importing ingest must not load Pillow

        for positions, pixels, errors in iter_pixels(items, model.image_size, batch_size):
            ok = [todo[i] for i in positions]
            yield (len(positions) + len(errors), ok, model.encode_pixels(pixels) if ok else None,
                   [str(exc) for _, exc in errors])
        return
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        yield (len(chunk), *_encode_texts(model, src, chunk))


def _encode_texts(model, src: Source, chunk: list):
    """Encode the texts at positions ``chunk``: (positions encoded, their embeddings, problem lines)."""
    ok, problems = [], []
    texts = []
    for pos in chunk:
        known, unknown = model.parse_text(src.items[pos])
        if known:
            texts.append(known)
            ok.append(pos)
        else:
            problems.append(f"id {shorten(src.ids[pos])}: no tag in the bundle vocabulary "
                            f"({', '.join(unknown[:5]) or 'empty text'})")
    return ok, model.encode_texts(texts) if texts else None, problems


def ingest(model, source: Source, index, *, batch_size: int = 32, save_every: int = 2000,
           on_progress: Callable[[int], None] | None = None) -> IngestReport:
    """Add the items of ``source`` that ``index`` does not hold yet, then save it. ``on_progress(n)`` is
    called as items are done (those already present first, in one call). Raises ``InputError`` only when
    none of the source's items could be added and the index held none of them before."""
    if source.modality not in MODALITIES:
        raise InputError(f"source modality must be image or text, not {shorten(source.modality)}")
    if index.modality and index.modality != source.modality:
        raise InputError(f"index {index.location} holds {index.modality} items, "
                         f"cannot add {source.modality} items to it")
    if not (len(source.ids) == len(source.items) == len(source.meta)):
        raise InputError(f"source has {len(source.ids)} ids, {len(source.items)} items, {len(source.meta)} "
                         "metadata records: they must match")
    batch_size = positive_int(batch_size, "batch_size")
    index.check_space(model, what=f"bundle {model.source}")
    seen, todo, duplicates = {}, [], 0
    indexed = index.present(dict.fromkeys(source.ids))
    for pos, item_id in enumerate(source.ids):
        if item_id in seen:
            _check_same(source, item_id, source.meta[seen[item_id]], source.meta[pos], "also given")
            duplicates += 1
        elif item_id not in indexed:
            todo.append(pos)
        else:
            _check_same(source, item_id, index.metadata(item_id), source.meta[pos], "indexed")
        seen.setdefault(item_id, pos)
    present = len(source.ids) - len(todo) - duplicates
    if on_progress and len(source.ids) > len(todo):
        on_progress(len(source.ids) - len(todo))
    skipped, added, unsaved = [], 0, 0
    for done, ok, emb, problems in _batches(model, source, todo, batch_size):
        skipped += problems
        for line in problems:
            log.debug("skipped %s", line)
        if ok:
            records = item_records(model, source.modality, [source.items[p] for p in ok], emb,
                                   [source.meta[p] for p in ok])
            index.add(emb, [source.ids[p] for p in ok], records)
            added, unsaved = added + len(ok), unsaved + len(ok)
        if unsaved >= save_every:
            index.save()
            unsaved = 0
        if on_progress:
            on_progress(done)
    if todo and not added and not present:
        raise InputError(f"nothing could be added to {index.location}: {len(skipped)} unusable items "
                         f"(first: {skipped[0]})")
    if added:
        index.record_roots(source.roots)
    index.save()
    log.info("%s index %s: added %d, already present %d, skipped %d", source.modality, index.location, added,
             present, len(skipped))
    return IngestReport(str(index.location), source.modality, added, present, skipped, duplicates, len(index))
