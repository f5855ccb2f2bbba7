"""Sharded Parquet embeddings: the plan (which items go in which shard), resume, and reading them back.

Why shards: embedding millions of photos takes core-hours, so a run must survive being killed. The sorted
input list is cut into fixed-size slices; shard ``i`` always holds the same items, is written atomically
(temporary file + rename) and is only ever counted done once its file exists with the expected items
digest, so a rerun skips finished shards and a ``kill -9`` never leaves a half shard counted as done.

Folder layout::

    plan.json              format, embedding_space, shard_size, item count, digest of the whole input list
    shard-00000.parquet    id, path, embedding (fixed-size list float32), label_scores, labels, error
    ...

Each shard's Parquet metadata repeats the bundle identity (``dagnn.embedding_space``), the label names and
thresholds, and the digest of its own item list. pyarrow is imported lazily (the ``[ray]`` extra).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import jsonio
from ..atomic import atomic_write_text
from ..errors import DagnnError, InputError, MismatchError, install_hint, positive_int
from ..items import item_record
from ..metrics import above_thresholds

log = logging.getLogger(__name__)

FORMAT = "dagnn-embeddings"
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class Item:
    id: str
    path: str
    labels: tuple = ()      # ground-truth labels when the source is a data set folder


@dataclass
class Shard:
    index: int
    items: list

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}.parquet"

    @property
    def digest(self) -> str:
        return _digest(self.items)


@dataclass
class Plan:
    out: Path
    embedding_space: str
    shards: list
    done: list = field(default_factory=list)      # shard indexes whose files are complete

    @property
    def todo(self) -> list:
        done = set(self.done)
        return [s for s in self.shards if s.index not in done]


def require_pyarrow() -> None:
    """Shards are Parquet files: say which extra brings pyarrow before any work starts."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise DagnnError("embeddings are written as Parquet shards, which needs pyarrow (the [ray] extra): "
                         f"{install_hint('ray')}") from exc


def _digest(items) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.id, it.path, list(it.labels)], ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def make_plan(items, out, embedding_space: str, shard_size: int = 1000) -> Plan:
    """Sort ``items`` by id, cut them into shards, and find the shards already finished in ``out``.

    A folder made from another input list, shard size or bundle is refused rather than mixed into."""
    require_pyarrow()
    shard_size = positive_int(shard_size, "shard size")
    items = sorted(items, key=lambda it: it.id)
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(a for a, b in zip(ids, ids[1:]) if a == b)
        raise InputError(f"id {dup!r:.80} appears twice in the input list")
    if not items:
        raise InputError("nothing to embed: the input list is empty")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    plan_meta = {"format": FORMAT, "format_version": 1, "embedding_space": embedding_space,
                 "shard_size": shard_size, "items": len(items), "items_sha256": _digest(items)}
    plan_path = out / PLAN_FILE
    if plan_path.is_file():
        old = _read_plan(plan_path)
        if old.get("embedding_space") != embedding_space:
            raise MismatchError(f"{out} holds embeddings of space {str(old.get('embedding_space'))[:12]}…, the "
                                f"bundle produces space {embedding_space[:12]}…: use another output folder")
        if old != plan_meta:
            raise InputError(f"{out} was started with another input list or shard size "
                             f"({old.get('items')} items, shards of {old.get('shard_size')}): use another folder")
    elif any(out.iterdir()):
        raise InputError(f"output folder {out} is not empty and holds no {PLAN_FILE}")
    else:
        atomic_write_text(plan_path, json.dumps(plan_meta, indent=1))
    for stale in out.glob(".shard-*.parquet.*.tmp"):  # left by a killed run; never counted as done
        stale.unlink(missing_ok=True)
    shards = [Shard(i, items[s:s + shard_size]) for i, s in enumerate(range(0, len(items), shard_size))]
    plan = Plan(out, embedding_space, shards)
    plan.done = [s.index for s in shards if _finished(out / s.name, s.digest)]
    return plan


def _read_plan(path: Path) -> dict:
    """A folder's plan.json: it may come from anywhere, so it is read with bounds like any input."""
    return jsonio.expect(jsonio.load_file(path), dict, str(path))


def _finished(path: Path, digest: str) -> bool:
    if not path.is_file():
        return False
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # unreadable: recompute it (atomic writes make this a foreign or damaged file)
        log.warning("%s is unreadable; it will be recomputed", path)
        return False
    return meta.get(b"dagnn.items_sha256", b"").decode() == digest


def write_shard(path, shard: Shard, embeddings: np.ndarray, scores: np.ndarray, errors: list, *,
                embedding_space: str, labels, thresholds) -> None:
    """Write one shard atomically. Rows whose ``errors`` entry is not None have null embedding and scores."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..atomic import atomic_write

    n, d = embeddings.shape
    c = scores.shape[1]
    ok = np.array([e is None for e in errors])

    def fixed(matrix, width):
        values = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).ravel(), type=pa.float32())
        return pa.FixedSizeListArray.from_arrays(values, width, mask=pa.array(~ok))

    table = pa.table({
        "id": pa.array([it.id for it in shard.items], pa.string()),
        "path": pa.array([it.path for it in shard.items], pa.string()),
        "embedding": fixed(embeddings, d),
        "label_scores": fixed(scores, c),
        "labels": pa.array([list(it.labels) for it in shard.items], pa.list_(pa.string())),
        "error": pa.array(errors, pa.string()),
    })
    meta = {"dagnn.format": FORMAT, "dagnn.embedding_space": embedding_space, "dagnn.shard": str(shard.index),
            "dagnn.items_sha256": shard.digest, "dagnn.label_names": json.dumps(list(labels)),
            "dagnn.thresholds": json.dumps([float(t) for t in thresholds])}
    table = table.replace_schema_metadata(meta)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


@dataclass
class Batch:
    ids: list
    vectors: np.ndarray
    metadata: list          # {"path", "predicted_labels", "labels" when known}


def read_embeddings(folder, model=None, batch_rows: int = 10000):
    """Yield ``Batch``es of a finished embeddings folder, error rows left out, without re-encoding.

    With ``model`` (a bundle or embedding_space string), shards of another embedding space are refused;
    an unfinished folder is refused too (rerun ``dagnn embed`` to finish it)."""
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    plan_path = folder / PLAN_FILE
    if not plan_path.is_file():
        raise InputError(f"{folder} is not an embeddings folder (no {PLAN_FILE})")
    plan = _read_plan(plan_path)
    space = getattr(model, "embedding_space", model)
    if space is not None and plan.get("embedding_space") != space:
        raise MismatchError(f"{folder} holds embeddings of space {str(plan.get('embedding_space'))[:12]}…, the "
                            f"bundle produces space {str(space)[:12]}…: embed again with this bundle")
    files = sorted(folder.glob("shard-*.parquet"))
    expected = -(-int(plan["items"]) // int(plan["shard_size"]))
    if len(files) != expected:
        raise InputError(f"{folder} is unfinished: {len(files)} of {expected} shards (rerun dagnn embed)")
    for path in files:
        pf = pq.ParquetFile(path)
        meta = pf.schema_arrow.metadata or {}
        if meta.get(b"dagnn.embedding_space", b"").decode() != plan["embedding_space"]:
            raise MismatchError(f"{path.name} in {folder} was written for another embedding space")
        where = f"{path.name} in {folder}: Parquet metadata"
        names = jsonio.loads(meta.get(b"dagnn.label_names", b""), f"{where} dagnn.label_names")
        thresholds = np.array(jsonio.loads(meta.get(b"dagnn.thresholds", b""), f"{where} dagnn.thresholds"),
                              dtype=np.float32)
        for rb in pf.iter_batches(batch_size=batch_rows):
            ok = rb.column("error").is_null().to_numpy(zero_copy_only=False)
            if not ok.any():
                continue
            ids = np.array(rb.column("id").to_pylist(), dtype=object)[ok]
            paths = np.array(rb.column("path").to_pylist(), dtype=object)[ok]
            truth = [x for x, keep in zip(rb.column("labels").to_pylist(), ok) if keep]
            emb = _matrix(rb.column("embedding").filter(pa.array(ok)))
            sc = _matrix(rb.column("label_scores").filter(pa.array(ok)))
            meta_rows = []
            for p, t, row in zip(paths, truth, sc):
                predicted = [names[j] for j in above_thresholds(row, thresholds)]
                meta_rows.append(item_record({"path": p, "labels": t}, predicted))
            yield Batch(list(ids), emb, meta_rows)


def _matrix(column) -> np.ndarray:
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


def load_into(index, folder, batch_rows: int = 10000, on_progress=None):
    """Add the embedded items of ``folder`` to ``index`` (either backend) without re-encoding; ids already
    in the index are skipped, so an interrupted load can be rerun. Returns an ``IngestReport``."""
    from ..ingest import IngestReport

    report = IngestReport(str(index.location), index.modality or "image", 0, 0, [], 0, 0)
    for batch in read_embeddings(folder, model=index.embedding_space, batch_rows=batch_rows):
        indexed = index.present(batch.ids)
        new = [j for j, item_id in enumerate(batch.ids) if item_id not in indexed]
        report.already_present += len(batch.ids) - len(new)
        if new:
            index.add(batch.vectors[new], [batch.ids[j] for j in new], [batch.metadata[j] for j in new])
            index.save()
        report.added += len(new)
        if on_progress:
            on_progress(report.added + report.already_present)
    report.items = len(index)
    return report
