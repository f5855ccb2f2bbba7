"""Atomic writes: readers see the old file (or folder) or the new one, never a half-written one.

Everything users keep — bundles, indexes, runs, feature caches, reports — is written through here: into a
hidden sibling (same folder, so the final rename stays on one file system), flushed to disk, renamed into
place, and the parent folder fsynced so that the rename itself survives a power cut.

Replacing a folder takes two renames (old aside, new in). A crash between them leaves nothing at the target
and the real data in ``.NAME.old-*``; a killed writer leaves ``.NAME.tmp-*``. ``recover`` repairs both —
it restores the ``.old`` folder when the target is missing and deletes stale leftovers — and runs before
every write here (and when a reader finds its target missing). A sibling is "stale" when the process named
in it is gone (same host), or, for names from another host or an older dagnn, when it is over an hour old;
so a writer still at work is never disturbed.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Callable

from .errors import DagnnError, StorageError

log = logging.getLogger(__name__)

STALE_AFTER_S = 3600
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
# .NAME.tmp-HOST-PID-RANDOM (current) or .NAME.tmp-RANDOM / .NAME.RANDOM.tmp (older dagnn)
_SIBLING = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<kind>tmp|old)-(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?[\w]+"
                      r"|[\w]+\.tmp)$")


def _sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(folder) -> None:
    """Make renames and new entries in ``folder`` durable (a no-op where folders cannot be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(folder)


def _storage_error(exc: OSError, path: Path, doing: str) -> StorageError:
    reason = exc.strerror or str(exc)
    code = f" [{errno.errorcode.get(exc.errno, exc.errno)}]" if exc.errno else ""
    return StorageError(f"cannot {doing} {path}: {reason}{code}; its previous version, if any, is unchanged")


def _is_stale(match: re.Match, path: Path) -> bool:
    host, pid = match.group("host"), match.group("pid")
    if host == _HOST and pid is not None:
        pid = int(pid)
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - path.lstat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(target) -> bool:
    """Repair what an interrupted write left beside ``target``: restore the newest stale ``.old`` copy when
    ``target`` is missing, delete stale ``.tmp``/``.old`` leftovers. Returns whether ``target`` was restored.
    Best effort: on a read-only folder it changes nothing and raises nothing."""
    target = Path(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return False
    stale = []
    for name in names:
        match = _SIBLING.match(name)
        if match and match.group("name") == target.name and _is_stale(match, target.parent / name):
            stale.append((match.group("kind") or "tmp", target.parent / name))
    restored = False
    try:
        olds = sorted((p for kind, p in stale if kind == "old"), key=lambda p: p.lstat().st_mtime)
        if olds and not (target.exists() or target.is_symlink()):
            os.replace(olds.pop(), target)  # the newest aside copy was the live one when the writer died
            fsync_dir(target.parent)
            log.warning("restored %s from an interrupted replacement", target)
            restored = True
        for kind, path in stale:
            if path.exists() or path.is_symlink():
                log.info("removing %s left by an interrupted write", path)
                _remove(path)
    except OSError as exc:
        log.warning("could not clean up beside %s: %s", target, exc)
    return restored


def atomic_write(path, write: Callable[[Path], None], mode: int = 0o644) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path``. ``mode``: the temporary file
    is private to its owner (mkstemp), the final file gets the usual shareable permissions. An ``OSError``
    (disk full, …) becomes a ``StorageError`` naming ``path``; the old file stays as it was."""
    path = Path(path)
    recover(path)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{_HOST}-{os.getpid()}-")
        os.close(fd)
    except OSError as exc:
        raise _storage_error(exc, path, "write") from exc
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, DagnnError):
            raise
        raise _storage_error(exc, path, "write") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def temp_dir_beside(target) -> Path:
    """A fresh hidden folder next to ``target``, to build a folder in before ``replace_dir`` moves it."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        recover(target)
        tmp = _sibling(target, "tmp")
        tmp.mkdir(mode=0o755)
        os.chmod(tmp, 0o755)
    except OSError as exc:
        raise _storage_error(exc, target, "create a folder beside") from exc
    return tmp


def replace_dir(tmp, target) -> Path:
    """Move the finished folder ``tmp`` to ``target``, replacing an existing ``target`` (file or folder) only
    once the new one is complete and on disk: the old one is renamed aside first and deleted last. If the
    process dies between the two renames, ``recover`` puts the old one back."""
    tmp, target = Path(tmp), Path(target)
    try:
        _fsync_tree(tmp)
        if target.exists() or target.is_symlink():
            old = _sibling(target, "old")
            os.replace(target, old)
            fsync_dir(target.parent)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old, target)  # put the old one back before reporting
                raise
            fsync_dir(target.parent)
            _remove(old)
        else:
            os.replace(tmp, target)
            fsync_dir(target.parent)
    except OSError as exc:
        raise _storage_error(exc, target, "replace") from exc
    return target
