"""Serving commands — ``index build|add|remove|info``, ``query``, ``tag``, ``eval`` — on the torch-free runtime.

Only ``eval --run`` touches the training side, imported lazily. Runtime modules are imported inside the
commands too, so that ``dagnn --help`` stays quick.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import typer

from .main import _DEBUG, app, fail, index_app

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MODALITIES = ("image", "text")


def user_errors(func):
    """Turn the runtime's and the data set's errors into one ``fail()`` line; with ``--debug`` let them
    propagate so that ``main()`` shows the traceback."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from dagnn_runtime.errors import DatasetError
        from dagnn_runtime.errors import DagnnError

        try:
            return func(*args, **kwargs)
        except (DagnnError, DatasetError) as exc:
            if _DEBUG["on"]:
                raise
            fail(str(exc))
    return wrapper


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _progress(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=_console(stderr=True), disable=quiet, transient=True)


def _load(bundle: Path, threads: Optional[int]):
    import dagnn_runtime as dr

    return dr.load(bundle, threads=threads)


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable))


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


# ---------------------------------------------------------------------------------------------- sources
@dataclass
class Source:
    """Items of one modality to put in an index: ids, what to encode (image paths or texts), metadata."""

    modality: str
    ids: list = field(default_factory=list)
    items: list = field(default_factory=list)
    meta: list = field(default_factory=list)


def sources_from_data(data: Path, modalities) -> list:
    """Photos of a data set folder (id = row) and the tag texts of all its pairs (same ids)."""
    from dagnn_runtime.dataset import Dataset

    ds = Dataset.load(data)
    out = []
    if "image" in modalities:
        src = Source("image")
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
    """Image files, or folders searched recursively; ids are paths relative to the folder given."""
    src = Source("image")
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                fail(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {path}")
            pairs = [(p.relative_to(path).as_posix(), p) for p in files]
        elif path.is_file():
            pairs = [(path.name, path)]
        else:
            fail(f"image file or folder {path} does not exist")
        for item_id, p in pairs:
            src.ids.append(item_id)
            src.items.append(p)
            src.meta.append({"path": str(p)})
    return src


def source_from_texts(path: Path) -> Source:
    """One text per non-empty line, ``ID<TAB>text`` or just the text (id = its line number)."""
    if not path.is_file():
        fail(f"text file {path} does not exist")
    src = Source("text")
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item_id, text = line.split("\t", 1) if "\t" in line else (str(lineno), line)
        src.ids.append(item_id.strip())
        src.items.append(text.strip())
        src.meta.append({"text": text.strip()})
    if not src.ids:
        fail(f"{path} holds no text")
    return src


# ----------------------------------------------------------------------------------------------- indexes
def find_index(path: Path, modality: Optional[str] = None) -> Optional[Path]:
    """``path`` itself when it is an index folder, else ``path/<modality>`` when that is one."""
    from dagnn_runtime.index import META_FILE

    if (path / META_FILE).is_file():
        return path
    if modality and (path / modality / META_FILE).is_file():
        return path / modality
    return None


def all_indexes(path: Path) -> list:
    single = find_index(path)
    found = [single] if single else [path / m for m in MODALITIES if find_index(path, m)]
    if not found:
        fail(f"no index at {path} (expected index.json there or in {path}/image, {path}/text)")
    return found


def _encode(model, src: Source, todo: list, batch_size: int, progress, task):
    """Encode the items at positions ``todo`` in batches; yields (positions, embeddings, problems)."""
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        ok, problems = [], []
        if src.modality == "image":
            import numpy as np

            from dagnn_runtime.errors import ImageInputError

            pixels = []
            for pos in chunk:
                try:
                    pixels.append(model.preprocess([src.items[pos]])[0])
                    ok.append(pos)
                except ImageInputError as exc:
                    problems.append(str(exc))
            emb = model.encode_pixels(np.stack(pixels)) if pixels else None
        else:
            texts = []
            for pos in chunk:
                known, unknown = model.parse_text(src.items[pos])
                if known:
                    texts.append(known)
                    ok.append(pos)
                else:
                    problems.append(f"id {src.ids[pos]!r}: no tag in the bundle vocabulary "
                                    f"({', '.join(unknown[:5]) or 'empty text'})")
            emb = model.encode_texts(texts) if texts else None
        progress.advance(task, len(chunk))
        yield ok, emb, problems


def ingest(model, src: Source, folder: Path, create: bool, batch_size: int, save_every: int, quiet: bool,
           index_options: dict) -> dict:
    """Add the items of ``src`` not yet in the index at ``folder`` (created when ``create``); saves every
    ``save_every`` additions so an interrupted run resumes where it stopped."""
    import dagnn_runtime as dr

    if find_index(folder) is not None:
        index = dr.Index.load(folder, model=model)
        if index.modality and index.modality != src.modality:
            fail(f"index {folder} holds {index.modality} items, cannot add {src.modality} items to it")
    elif create:
        index = dr.Index.for_model(model, src.modality, capacity=max(len(src.ids), 16), **index_options)
    else:
        fail(f"no index at {folder}: create it with `dagnn index build`")
    seen, todo, duplicates = set(), [], 0
    for pos, item_id in enumerate(src.ids):
        if item_id in seen:
            duplicates += 1
        elif item_id not in index:
            todo.append(pos)
        seen.add(item_id)
    present = len(src.ids) - len(todo) - duplicates
    problems, added, unsaved = [], 0, 0
    with _progress(quiet) as progress:
        task = progress.add_task(f"{src.modality} → {folder}", total=len(todo))
        for ok, emb, bad in _encode(model, src, todo, batch_size, progress, task):
            problems += bad
            if ok:
                index.add(emb, [src.ids[p] for p in ok], [src.meta[p] for p in ok])
                added += len(ok)
                unsaved += len(ok)
            if unsaved >= save_every:
                index.save(folder)
                unsaved = 0
    for line in problems[:10]:
        typer.echo(f"warning: skipped {line}", err=True)
    if len(problems) > 10:
        typer.echo(f"warning: … and {len(problems) - 10} more skipped items", err=True)
    if todo and not added:
        fail(f"nothing could be added to {folder}: {len(problems)} unusable items (see the warnings above)")
    if added or find_index(folder) is None:
        index.save(folder)
    return {"index": str(folder), "modality": src.modality, "added": added, "already_present": present,
            "skipped": len(problems), "duplicate_ids": duplicates, "items": len(index)}


def _sources(data, images, texts, modality) -> list:
    given = [x for x in (data, images, texts) if x]
    if len(given) != 1:
        fail("give exactly one of --data DIR, --images DIR|FILE, --texts FILE")
    if modality is not None and modality not in MODALITIES:
        fail(f"--modality must be image or text, not {modality!r}")
    if data:
        return sources_from_data(data, [modality] if modality else MODALITIES)
    src = source_from_images(images) if images else source_from_texts(texts)
    if modality and modality != src.modality:
        fail(f"--modality {modality} does not match the {src.modality} items given")
    return [src]


def _run_ingest(bundle, out, data, images, texts, modality, batch_size, threads, save_every, quiet, as_json,
                create, index_options):
    model = _load(bundle, threads)
    reports = []
    for src in _sources(data, images, texts, modality):
        # --data lays out INDEX/image and INDEX/text; single sources go to INDEX itself unless it is such a parent
        folder = find_index(out, src.modality) or (out / src.modality if data else out)
        reports.append(ingest(model, src, folder, create, batch_size, save_every, quiet, index_options))
    if as_json:
        _echo_json(reports)
        return
    for r in reports:
        typer.echo(f"{r['modality']} index {r['index']}: {r['items']} items (added {r['added']}, already present "
                   f"{r['already_present']}, skipped {r['skipped']})")


_data_opt = typer.Option(None, "--data", help="Data set folder: indexes its photos (INDEX/image) and tag texts (INDEX/text).")
_images_opt = typer.Option(None, "--images", help="Image folder (searched recursively) or file; repeatable.")
_texts_opt = typer.Option(None, "--texts", help="Text file: one text per line, optionally 'ID<TAB>tags'.")
_bundle_opt = typer.Option(..., "--bundle", help="Bundle folder or .dagnn archive.")
_threads_opt = typer.Option(None, "--threads", min=1, help="Inference threads (default: onnxruntime's choice).")


@index_app.command("build")
@user_errors
def index_build(
    bundle: Path = _bundle_opt,
    out: Path = typer.Option(..., "--out", help="Index folder to create (or resume)."),
    data: Optional[Path] = _data_opt,
    images: Optional[List[Path]] = _images_opt,
    texts: Optional[Path] = _texts_opt,
    modality: Optional[str] = typer.Option(None, "--modality", help="image|text: with --data, index only one."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    threads: Optional[int] = _threads_opt,
    m: int = typer.Option(16, "--M", min=2, help="HNSW links per node."),
    ef_construction: int = typer.Option(200, "--ef-construction", min=1),
    ef: int = typer.Option(128, "--ef", min=1, help="Default search breadth stored with the index."),
    save_every: int = typer.Option(2000, "--save-every", min=1, help="Checkpoint after this many additions."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Encode items with a bundle and index them. Re-running skips ids already in the index."""
    _run_ingest(bundle, out, data, images, texts, modality, batch_size, threads, save_every, quiet, as_json,
                create=True, index_options={"M": m, "ef_construction": ef_construction, "ef": ef})


@index_app.command("add")
@user_errors
def index_add(
    bundle: Path = _bundle_opt,
    index: Path = typer.Option(..., "--index", help="Existing index folder (or a --data parent)."),
    data: Optional[Path] = _data_opt,
    images: Optional[List[Path]] = _images_opt,
    texts: Optional[Path] = _texts_opt,
    modality: Optional[str] = typer.Option(None, "--modality", help="image|text: with --data, add only one."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    threads: Optional[int] = _threads_opt,
    save_every: int = typer.Option(2000, "--save-every", min=1),
    quiet: bool = typer.Option(False, "--quiet"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Add items to an existing index (ids already present are skipped)."""
    _run_ingest(bundle, index, data, images, texts, modality, batch_size, threads, save_every, quiet, as_json,
                create=False, index_options={})


@index_app.command("remove")
@user_errors
def index_remove(
    index: Path = typer.Option(..., "--index", help="Index folder (or a --data parent: removes from both)."),
    ids: List[str] = typer.Argument(..., help="Ids to remove."),
):
    """Remove items by id; they are never returned by queries again."""
    import dagnn_runtime as dr

    loaded = {folder: dr.Index.load(folder) for folder in all_indexes(index)}
    unknown = [i for i in ids if not any(i in ix for ix in loaded.values())]
    if unknown:
        fail(f"id {unknown[0]!r} is not in {index} ({len(unknown)} unknown ids); nothing removed")
    for folder, ix in loaded.items():
        mine = [i for i in dict.fromkeys(ids) if i in ix]
        if mine:
            ix.remove(mine)
            ix.save(folder)
            typer.echo(f"{folder}: removed {len(mine)}, {len(ix)} items left")


@index_app.command("info")
@user_errors
def index_info(
    index: Path = typer.Option(..., "--index", help="Index folder (or a --data parent)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Size, dimension, modality, embedding space and HNSW parameters of an index."""
    import dagnn_runtime as dr

    infos = [dict(path=str(folder), **dr.Index.load(folder).info()) for folder in all_indexes(index)]
    if as_json:
        _echo_json(infos)
        return
    from rich.table import Table

    table = Table("index", "modality", "items", "removed", "dim", "M", "ef", "embedding space")
    for i in infos:
        table.add_row(i["path"], str(i["modality"]), str(i["items"]), str(i["removed"]), str(i["dim"]),
                      str(i["M"]), str(i["ef"]), i["embedding_space"][:16] + "…")
    _console().print(table)


# ----------------------------------------------------------------------------------------------- query
def _item_text(meta: dict) -> str:
    if "path" in meta:  # shorter relative to the working directory when below it
        rel = os.path.relpath(meta["path"]) if os.path.isabs(meta["path"]) else meta["path"]
        return meta["path"] if rel.startswith("..") else rel
    if "tags" in meta:
        return ", ".join(meta["tags"])
    return meta.get("text", "")


@app.command()
@user_errors
def query(
    bundle: Path = _bundle_opt,
    index: Path = typer.Option(..., "--index", help="Index folder, or a parent holding image/ and text/."),
    image: Optional[Path] = typer.Option(None, "--image", help="Query with this image."),
    text: Optional[str] = typer.Option(None, "--text", help="Query with these tags, e.g. 'sky, clouds'."),
    k: int = typer.Option(10, "--k", min=1, help="Number of results."),
    target: Optional[str] = typer.Option(None, "--target", help="image|text: what to retrieve (default: the "
                                                                 "other modality, or the index's own)."),
    ef: Optional[int] = typer.Option(None, "--ef", min=1, help="HNSW search breadth (default: the index's)."),
    exact: bool = typer.Option(False, "--exact", help="Brute-force search instead of HNSW."),
    threads: Optional[int] = _threads_opt,
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
):
    """Retrieve the items most similar to an image or a text (Image2Text / Text2Image by default)."""
    import dagnn_runtime as dr

    if (image is None) == (text is None):
        fail("give exactly one of --image FILE or --text 'tags'")
    if target is not None and target not in MODALITIES:
        fail(f"--target must be image or text, not {target!r}")
    source = "image" if image is not None else "text"
    other = "text" if source == "image" else "image"
    folder = find_index(index)
    if folder is not None:  # a single index: search it, by default whatever it holds
        ix = dr.Index.load(folder)
        target = target or ix.modality or other
        if ix.modality and ix.modality != target:
            fail(f"index {folder} holds {ix.modality} items, not {target} items (--target {target})")
    else:  # a --data parent holding image/ and text/
        target = target or other
        folder = find_index(index, target)
        if folder is None:
            fail(f"no {target} index at {index} (expected {index}/index.json or {index}/{target}/index.json)")
        ix = dr.Index.load(folder)
    model = _load(bundle, threads)
    ix.check_space(model, what=f"bundle {bundle}")
    if image is not None:
        vec = model.encode_images([image])
        shown = str(image)
    else:
        known, unknown = model.parse_text(text)
        if known and unknown:
            typer.echo(f"note: ignoring tags not in the vocabulary: {', '.join(unknown)}", err=True)
        vec = model.encode_texts([text])
        shown = ", ".join(known)
    ids, scores, meta = ix.query(vec, k=k, ef=ef, exact=exact)
    results = [{"rank": r + 1, "id": i, "score": float(s), "metadata": md}
               for r, (i, s, md) in enumerate(zip(ids[0], scores[0], meta[0]))]
    if as_json:
        _echo_json({"query": {source: shown}, "target": target, "index": str(folder), "k": k, "results": results})
        return
    from rich.table import Table

    table = Table("rank", "score", "id", title=f"{source} {shown!r} → {target} ({len(ix)} items)")
    table.add_column("item", overflow="fold")
    table.add_column("labels")
    for r in results:
        table.add_row(str(r["rank"]), f"{r['score']:.4f}", r["id"], _item_text(r["metadata"]),
                      ", ".join(r["metadata"].get("labels", [])))
    _console().print(table)


# ------------------------------------------------------------------------------------------------- tag
@app.command()
@user_errors
def tag(
    bundle: Path = _bundle_opt,
    image: List[Path] = typer.Option(..., "--image", help="Image(s) to tag; repeatable."),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="At most this many labels per image."),
    threads: Optional[int] = _threads_opt,
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
):
    """Labels whose score passes the bundle's calibrated threshold, best first."""
    model = _load(bundle, threads)
    emb = model.encode_images(list(image))
    scores = model.score_labels(emb)
    tags = model.labels_above_threshold(scores, top=top)
    thresholds = dict(zip(model.labels, model.thresholds.tolist()))
    results = [{"image": str(path), "labels": [{"label": l, "score": s, "threshold": _finite(thresholds[l])}
                                               for l, s in item]}
               for path, item in zip(image, tags)]
    if as_json:
        _echo_json(results)
        return
    out = _console()
    for path, item, row in zip(image, tags, scores):
        if not item:
            best = int(row.argmax())
            out.print(f"{path}: no label passes its threshold (best: {model.labels[best]} {row[best]:.3f} < "
                      f"{model.thresholds[best]:.3f})", markup=False)
            continue
        from rich.table import Table

        table = Table("label", "score", "threshold", title=str(path))
        for label, s in item:
            table.add_row(label, f"{s:.4f}", f"{thresholds[label]:.4f}")
        out.print(table)


# ------------------------------------------------------------------------------------------------ eval
SPLITS = ("train", "val", "test")


def evaluate_bundle(model, data: Path, split: str = "test", k: Optional[int] = None, batch_size: int = 32,
                    quiet: bool = True) -> dict:
    """Retrieval mAP and tagging metrics of a bundle on a data set split, through the runtime alone."""
    import numpy as np

    from dagnn_runtime.dataset import Dataset, bag_of_words
    from dagnn_runtime.metrics import cross_modal_map, tagging_metrics

    ds = Dataset.load(data)
    if set(ds.labels) != set(model.labels):
        fail(f"{data}/labels.txt has other labels than the bundle ({sorted(set(ds.labels) ^ set(model.labels))[:5]})")
    config = model.manifest.get("config", {})  # the training config: split the data the same way
    splits = ds.splits(seed=int(config.get("split_seed", 0)), val_fraction=float(config.get("val_fraction", 0.1)))
    idx = getattr(splits, split)
    if len(idx) == 0:
        fail(f"the {split} split of {data} is empty")
    paths = [ds.image_path(i) for i in idx]
    image_emb = np.empty((len(idx), model.embedding_dim), dtype=np.float32)
    with _progress(quiet) as progress:
        task = progress.add_task(f"encoding {len(idx)} {split} images", total=len(idx))
        for start in range(0, len(idx), batch_size):
            chunk = paths[start:start + batch_size]
            image_emb[start:start + len(chunk)] = model.encode_images(chunk, batch_size=batch_size)
            progress.advance(task, len(chunk))
    vocab_index = {t: j for j, t in enumerate(model.vocab)}
    text_emb = model.encode_bow(bag_of_words([ds.pairs[i].tags for i in idx], vocab_index))
    y = ds.label_matrix(idx)[:, [ds.label_index[name] for name in model.labels]]
    result = {"split": split, "n": int(len(idx)), **cross_modal_map(image_emb, text_emb, y)}
    if k:
        result["map_at_k"] = {"k": int(k), **cross_modal_map(image_emb, text_emb, y, k=k)}
    tagging = tagging_metrics(model.score_labels(image_emb), y, model.thresholds)
    tagging["thresholds"] = [_finite(float(x)) for x in model.thresholds]
    result["tagging"] = tagging
    return result


@app.command("eval")
@user_errors
def eval_cmd(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Evaluate this bundle with the runtime alone."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data set folder (with --bundle)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Evaluate a training run (needs the [train] extra)."),
    split: str = typer.Option("test", "--split", help="train | val | test."),
    k: Optional[int] = typer.Option(None, "--k", min=1, help="Also report mAP@k."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    threads: Optional[int] = _threads_opt,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
):
    """Cross-modal mAP (I2T, T2I, average) and tagging metrics, from a bundle or a training run."""
    if split not in SPLITS:
        fail(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    claimed = {}
    if run is not None:
        if bundle is not None or data is not None:
            fail("give either --run RUN or --bundle B --data DIR, not both")
        try:
            from dagnn_export.evaluate import evaluate_run
        except ImportError as exc:
            fail(f"`dagnn eval --run` needs the [train] extra (torch): {exc}")
        try:
            result = evaluate_run(run, split, k)
        except (ValueError, OSError) as exc:  # the training side's errors (RunError, FeatureError, ...)
            if _DEBUG["on"]:
                raise
            fail(str(exc))
    else:
        if bundle is None or data is None:
            fail("give --bundle B --data DIR (or --run RUN)")
        model = _load(bundle, threads)
        result = evaluate_bundle(model, data, split, k, batch_size, quiet)
        metrics = model.manifest.get("metrics", {})
        claimed = {**metrics.get(split, {}), **{f"tagging.{key}": v for key, v in metrics.get(f"{split}_tagging", {}).items()}}
    if as_json:
        _echo_json(result)
        return
    from rich.table import Table

    rows = [("I2T mAP", result["i2t"], claimed.get("i2t")), ("T2I mAP", result["t2i"], claimed.get("t2i")),
            ("average mAP", result["avg"], claimed.get("avg"))]
    if "map_at_k" in result:
        at = result["map_at_k"]
        rows += [(f"I2T mAP@{at['k']}", at["i2t"], None), (f"T2I mAP@{at['k']}", at["t2i"], None),
                 (f"average mAP@{at['k']}", at["avg"], None)]
    tagging = result.get("tagging", {})
    rows += [(f"tagging {key}", tagging[key], claimed.get(f"tagging.{key}"))
             for key in ("mean_ap", "CF1", "OF1") if key in tagging]
    table = Table("metric", "value", *(["bundle claims"] if claimed else []),
                  title=f"{run or bundle}: {result.get('split', split)} split, {result.get('n', '?')} pairs")
    for name, value, claim in rows:
        table.add_row(name, f"{value:.4f}", *([f"{claim:.4f}" if claim is not None else ""] if claimed else []))
    _console().print(table)
