"""Embedding shards in this process (``--engine local``); ``encode_shard`` is also what each Ray actor runs.

Failures are per item: an image that cannot be read or decoded becomes a row with a one-line ``error`` and
no embedding, and the run goes on.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..preprocess import iter_pixels
from .shards import Shard, make_plan, write_shard

log = logging.getLogger(__name__)


@dataclass
class EmbedReport:
    out: str
    shards: int
    skipped_shards: int                        # finished by an earlier run
    items: int                                 # items embedded by this run (errors included)
    errors: int
    seconds: float
    error_samples: list = field(default_factory=list)


def _one_line(exc: Exception) -> str:
    return re.sub(r"\s+", " ", f"{exc}" or type(exc).__name__).strip()[:200]


def encode_shard(model, shard: Shard, out, batch_size: int = 32) -> tuple[int, list]:
    """Encode one shard's images and write its Parquet file atomically; returns (rows, error messages)."""
    n, d, c = len(shard.items), model.embedding_dim, len(model.labels)
    embeddings = np.zeros((n, d), dtype=np.float32)
    scores = np.zeros((n, c), dtype=np.float32)
    errors: list = [None] * n
    paths = [item.path for item in shard.items]
    for rows, pixels, failed in iter_pixels(paths, model.image_size, batch_size):
        for j, exc in failed:  # an image that cannot be read or decoded only costs its own row
            errors[j] = _one_line(exc)
        if rows:
            emb = model.encode_pixels(pixels)
            embeddings[rows] = emb
            scores[rows] = model.score_labels(emb)
    write_shard(Path(out) / shard.name, shard, embeddings, scores, errors, embedding_space=model.embedding_space,
                labels=model.labels, thresholds=model.thresholds)
    return n, [e for e in errors if e is not None]


def embed(model, items, out, *, shard_size: int = 1000, batch_size: int = 32, on_shard=None) -> EmbedReport:
    """Embed ``items`` into ``out`` shard by shard, skipping shards an earlier run finished."""
    plan = make_plan(items, out, model.embedding_space, shard_size)
    started = time.perf_counter()
    report = EmbedReport(str(out), len(plan.shards), len(plan.done), 0, 0, 0.0)
    for shard in plan.todo:
        rows, errors = encode_shard(model, shard, out, batch_size)
        _count(report, rows, errors)
        if on_shard:
            on_shard(shard.index, rows, len(errors))
    report.seconds = time.perf_counter() - started
    return report


def _count(report: EmbedReport, rows: int, errors: list) -> None:
    report.items += rows
    report.errors += len(errors)
    report.error_samples.extend(errors[: max(0, 5 - len(report.error_samples))])

