"""The one JSON (and line list) writer of the training side: run files and bundle manifests alike.

Writes atomically (readers see the old file or the new one), accepts numpy scalars, arrays and paths,
and refuses NaN and infinity: JSON has no such values, and a NaN in a run's metrics or a manifest means
something upstream broke, which should be loud rather than written down.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dagnn_runtime.atomic import atomic_write_text

from .errors import TrainingError


def json_default(obj):
    """``json.dumps(default=...)`` for the numpy values and paths the training side produces."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path, error=TrainingError):
    """The JSON value in ``path``; an unreadable or malformed file raises ``error`` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"{path}: cannot read JSON ({exc})") from exc


def write_json(path, obj) -> Path:
    try:
        text = json.dumps(obj, indent=2, default=json_default, allow_nan=False)
    except ValueError as exc:
        raise TrainingError(f"refusing to write {path}: it would hold NaN or infinity ({exc})") from exc
    return atomic_write_text(path, text + "\n")


def write_lines(path, lines) -> Path:
    return atomic_write_text(path, "".join(f"{x}\n" for x in lines))
