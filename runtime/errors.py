"""The runtime's exceptions: one hierarchy, every message names the file, input or index concerned."""
from __future__ import annotations

from .preprocess import ImageError


class DagnnError(Exception):
    """Base class of every error the runtime raises on purpose."""


class BundleError(DagnnError):
    """A bundle cannot be used: missing or tampered file, unknown format, inconsistent dimensions."""


class InputError(DagnnError, ValueError):
    """An input (image, text, vector, id) cannot be used as given."""


class ImageInputError(InputError, ImageError):
    """An image could not be decoded; also a ``preprocess.ImageError`` so either can be caught."""


class IndexFileError(DagnnError):
    """An index folder is missing, incomplete or corrupt."""


class MismatchError(DagnnError):
    """An index and a bundle (or two indexes) live in different embedding spaces."""
