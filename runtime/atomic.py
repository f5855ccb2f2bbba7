"""Atomic writes: readers see the old file (or folder) or the new one, never a half-written one.

Everything users keep — bundles, indexes, runs, feature caches, reports — is written through here: into a
temporary name in the same folder (so the final rename stays on one file system), flushed to disk, then
renamed into place with ``os.replace``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path, write: Callable[[Path], None], mode: int = 0o644) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path``. ``mode``: the temporary file
    is private to its owner (mkstemp), the final file gets the usual shareable permissions."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def temp_dir_beside(target) -> Path:
    """A fresh hidden folder next to ``target``, to build a folder in before ``replace_dir`` moves it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)
    return tmp


def replace_dir(tmp, target) -> Path:
    """Move the finished folder ``tmp`` to ``target``, replacing an existing ``target`` (file or folder) only
    once the new one is complete: the old one is renamed aside first and deleted last."""
    tmp, target = Path(tmp), Path(target)
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(tmp, target)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(tmp, target)
    return target
