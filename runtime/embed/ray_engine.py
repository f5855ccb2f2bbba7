"""Embedding shards on Ray Data (``--engine ray``): one task per unfinished shard, run by a pool of actors
that each hold one onnxruntime session of the bundle's image encoder.

Why shards as the unit of work: a shard is what is written atomically and skipped on resume, so an actor
that reads, encodes and writes a whole shard keeps "done" meaning "on disk" without a shuffle. Ray is
imported lazily (the ``[ray]`` extra). ``ray.init()`` joins the cluster named by ``RAY_ADDRESS`` when it is
set; otherwise a local Ray with ``workers`` CPUs is started and shut down afterwards.
"""
from __future__ import annotations

import logging
import os
import time

from ..errors import DagnnError, install_hint
from .local import EmbedReport, encode_shard
from .shards import Item, Shard, make_plan

log = logging.getLogger(__name__)


class _ShardEncoder:
    """A Ray Data actor: loads the bundle once, then encodes and writes the shards it is handed."""

    def __init__(self, bundle: str, out: str, batch_size: int, threads: int, digest: str | None = None,
                 force_threads: bool = False):
        from .. import load

        # pinned to the driver's bundle: a bundle replaced meanwhile would write embeddings of another model
        self.model = load(bundle, providers="cpu", threads=threads, expect_digest=digest, force_threads=force_threads)
        self.out, self.batch_size = out, batch_size

    def __call__(self, batch: dict) -> dict:
        rows, errors, done = [], [], []
        for index, ids, paths, labels in zip(batch["shard"], batch["ids"], batch["paths"], batch["labels"]):
            items = [Item(i, p, tuple(lab)) for i, p, lab in zip(ids, paths, labels)]
            n, errs = encode_shard(self.model, Shard(int(index), items), self.out, self.batch_size)
            rows.append(n)
            errors.append(errs[:5])
            done.append(len(errs))
        return {"shard": list(batch["shard"]), "rows": rows, "errors": done, "samples": errors}


def embed_ray(bundle, model, items, out, *, shard_size: int = 1000, batch_size: int = 32, workers: int = 2,
              threads: int = 1, on_shard=None, force_threads: bool = False) -> EmbedReport:
    """Embed ``items`` into ``out`` on Ray Data with ``workers`` actors; same files as ``local.embed``."""
    try:
        import ray
    except ImportError as exc:
        raise DagnnError(f"--engine ray needs the [ray] extra ({exc}): {install_hint('ray')}") from exc
    plan = make_plan(items, out, model.embedding_space, shard_size)
    report = EmbedReport(str(out), len(plan.shards), len(plan.done), 0, 0, 0.0)
    if not plan.todo:
        return report
    started_here = not ray.is_initialized()
    if started_here:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=workers * threads, include_dashboard=False, logging_level=logging.WARNING)
    started = time.perf_counter()
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        rows = [{"shard": s.index, "ids": [it.id for it in s.items], "paths": [it.path for it in s.items],
                 "labels": [list(it.labels) for it in s.items]} for s in plan.todo]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _ShardEncoder, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
            fn_constructor_kwargs={"bundle": str(bundle), "out": str(out), "batch_size": batch_size,
                                   "threads": threads, "digest": getattr(model, "bundle_digest", None),
                                   "force_threads": force_threads})
        for result in ds.iter_rows():
            report.items += int(result["rows"])
            report.errors += int(result["errors"])
            report.error_samples.extend(list(result["samples"])[: max(0, 5 - len(report.error_samples))])
            if on_shard:
                on_shard(int(result["shard"]), int(result["rows"]), int(result["errors"]))
    except DagnnError:
        raise
    except Exception as exc:  # Ray wraps worker failures in its own types; keep one line for the user
        raise DagnnError(f"Ray embedding into {out} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                         ) from exc
    finally:
        if started_here:
            ray.shutdown()
    report.seconds = time.perf_counter() - started
    return report
