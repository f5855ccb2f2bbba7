"""Every error dagnn raises on purpose derives from ``DagnnError``; messages name the file, input or index.

A leaf module: it imports nothing from the package, so any module can raise these without a cycle.
The training side's errors derive from ``dagnn_export.errors.TrainingError``, itself a ``DagnnError``.
"""
from __future__ import annotations

import numbers


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


class StorageError(DagnnError, OSError):
    """Writing to disk failed (disk full, permission denied, read-only file system); the message names the
    path and says that the previous version is untouched."""


class MismatchError(DagnnError):
    """An index and a bundle (or two indexes) live in different embedding spaces."""


def shorten(value, limit: int = 80, *, path: bool = False) -> str:
    """How a message quotes user input: ``repr``-style (so control characters and undecodable file names stay
    visible and harmless), cut to about ``limit`` characters with the full length stated. Every message that
    echoes an image name, a text or a tag goes through here, so a 100 KB input never floods stderr.
    ``path=True`` cuts in the middle instead, keeping the file name at the end."""
    if isinstance(value, bytes):
        text = repr(value)
    else:
        if not isinstance(value, str):
            value = str(value)
        # Undecodable bytes of a file name arrive as lone surrogates (os.fsdecode); repr shows them as \udcXX.
        text = repr(value)
    if len(text) <= limit:
        return text
    if path:
        head = limit // 4
        return f"{text[:head]}…{text[-(limit - head - 1):]}"
    return f"{text[:limit - 1]}…' ({len(value)} characters)"


def positive_int(value, name: str) -> int:
    """``value`` as an ``int`` when it is a whole number of at least 1 (a Python or numpy integer, never a
    bool), else an ``InputError`` naming ``name``: the one rule for counts, sizes and thread numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {shorten(value)}")
    return int(value)


def install_hint(extra: str) -> str:
    """The command that installs one of dagnn's extras (``[serve]``, ``[plots]`` …) into the running Python, for
    a message to end with. dagnn is installed from its source folder, not from a package index, so the command
    names that folder: the one pip recorded for this install (``.`` when it is the current folder), else
    ``'.[extra]'`` to run in the dagnn source folder. The one place every "needs the [x] extra" message gets
    its command from (tests/test_first_hour.py checks each hint names an extra that installs)."""
    import os
    import shlex
    import sys

    source = _source_folder()
    if source is None:
        return f"pip install '.[{extra}]' in the dagnn source folder"
    here = os.getcwd()
    where = "." if source == here else source
    python = sys.executable or "python3"
    if python.startswith(here + os.sep):
        python = os.path.relpath(python, here)
    return f"{shlex.quote(python)} -m pip install {shlex.quote(f'{where}[{extra}]')}"


def _source_folder() -> str | None:
    """The folder dagnn was installed from, as pip recorded it (``direct_url.json``), when it still holds a
    pyproject.toml; else None."""
    import json
    import os
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    for dist in metadata.distributions(name="dagnn"):  # a source folder's own dagnn.egg-info records no URL
        try:
            record = json.loads(dist.read_text("direct_url.json") or "{}")
        except (ValueError, OSError):
            continue
        url = urlparse(str(record.get("url", "")))
        if url.scheme == "file" and "dir_info" in record:
            folder = os.path.normpath(unquote(url.path))
            if os.path.isfile(os.path.join(folder, "pyproject.toml")):
                return folder
    return None
