"""The training side's errors: all ``TrainingError``, itself a ``DagnnError``, so the CLI (and any other
caller) turns every one of them into one line without knowing where it came from.

The ValueError / RuntimeError bases are kept from before, so code that caught those still works.
"""
from __future__ import annotations

from dagnn_runtime.errors import DagnnError


class TrainingError(DagnnError):
    """Base of every error the torch side raises on purpose; the message names the file or option."""


class RunError(TrainingError, ValueError):
    """A run directory is missing a file or does not match what is asked of it."""


class FeatureError(TrainingError, ValueError):
    """The feature cache is missing, malformed, or lacks rows; the message names the file and rows."""


class BackboneError(TrainingError, ValueError):
    """A backbone could not be built (unknown name, missing or mismatching weights)."""


class DataError(TrainingError, ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file."""


class ExportError(TrainingError, RuntimeError):
    """The export cannot be completed or a check failed; nothing was written at the target."""


class DemoError(TrainingError, RuntimeError):
    """The demo ran but its result is wrong (e.g. no better than random ranking)."""
