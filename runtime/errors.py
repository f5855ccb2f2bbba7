"""Every error dagnn raises on purpose derives from ``DagnnError``; messages name the file, input or index.

A leaf module: it imports nothing from the package, so any module can raise these without a cycle.
The training side's errors derive from ``dagnn_export.errors.TrainingError``, itself a ``DagnnError``.
"""
from __future__ import annotations


class DagnnError(Exception):
    """Base class of every error dagnn raises on purpose; callers turn it into one line for the user."""


class BundleError(DagnnError):
    """A bundle cannot be used: missing or tampered file, unknown format, inconsistent dimensions."""


class InputError(DagnnError, ValueError):
    """An input (image, text, vector, id, option) cannot be used as given."""


class ImageInputError(InputError):
    """An image could not be used: missing, undecodable, too large, or of an unsupported kind."""


class DatasetError(DagnnError, ValueError):
    """A data set folder is missing files or holds malformed records."""


class IndexFileError(DagnnError):
    """An index is missing, incomplete or corrupt."""


class MismatchError(DagnnError):
    """An index and a bundle (or two indexes) live in different embedding spaces."""
