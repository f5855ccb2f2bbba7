"""Reading a photo the index recorded, for ``GET /v1/items/{id}/image``: a regular file inside the index's
photo folders, checked and read through one descriptor, every time it is served.

Which folders (``roots``): those the index records (an hnsw index records the folders given to ``dagnn
index build/add``, and the server's uploads folder once an image was added over HTTP), and always this
server's uploads folder. An index that records none (a Milvus collection; an hnsw index older than
recorded roots) has, for each item, the folder of its stored path as root: only the file itself is then
checked, the folders above it are trusted as they were at index time. A stored path outside every root
is not served.

How (``read_photo``): the path is split lexically into its root and the names below it. The root is
opened as a folder (links above it and at it are followed: that is where the user keeps the photos).
Each name below is opened relative to the folder above it with ``O_NOFOLLOW``, so a symbolic link
anywhere below the root, made before or after indexing, is refused. The file is opened with
``O_NOFOLLOW | O_NONBLOCK`` (a FIFO never blocks the opening thread), then ``fstat`` of that descriptor
must say a regular file of at most ``MAX_PHOTO_BYTES``; the bytes served are read from that same
descriptor, so what was checked is what is sent. Nothing is resolved or cached from one request to the
next: a photo replaced by a link after it was indexed is refused at its next request.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

MAX_PHOTO_BYTES = 64 * 1024 * 1024   # larger files are not served (photos are far smaller; bounds memory)
_CHUNK = 1024 * 1024

_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BUSY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM}   # the process, not the file: worth retrying


class NotServed(Exception):
    """The file is not served: ``reason`` is for the server log, never for the client."""

    def __init__(self, reason: str, busy: bool = False):
        super().__init__(reason)
        self.reason, self.busy = reason, busy


@dataclass(frozen=True)
class Photo:
    data: bytes
    suffix: str   # lower case, with the dot: picks the Content-Type


def normal(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def root_of(path: str, roots) -> str | None:
    """The deepest of ``roots`` (normalised absolute folders) that holds ``path``, or None."""
    best = None
    for root in roots:
        try:
            inside = os.path.commonpath([root, path]) == root
        except ValueError:  # another drive, or relative against absolute
            inside = False
        if inside and path != root and (best is None or len(root) > len(best)):
            best = root
    return best


def read_photo(path: str, roots, max_bytes: int = MAX_PHOTO_BYTES) -> Photo:
    """The bytes of the regular file ``path`` inside one of ``roots`` (see the module); ``NotServed`` else.
    With ``roots`` empty, the file's own folder is its root."""
    path = normal(path)
    roots = [normal(r) for r in roots] or [os.path.dirname(path)]
    root = root_of(path, roots)
    if root is None:
        raise NotServed("outside the index's photo folders")
    names = os.path.relpath(path, root).split(os.sep)
    if os.open not in os.supports_dir_fd or not _NOFOLLOW:  # no openat: resolve and compare instead
        return _read_resolved(path, root, max_bytes)
    try:
        folder = os.open(root, _FLAGS | _DIRECTORY)
    except OSError as exc:
        raise _not_served(exc, "its photo folder cannot be opened") from None
    try:
        for name in names[:-1]:
            try:
                below = os.open(name, _FLAGS | _DIRECTORY | _NOFOLLOW, dir_fd=folder)
            except OSError as exc:
                raise _not_served(exc, f"folder {name!r} below {root} is a link or missing") from None
            os.close(folder)
            folder = below
        try:
            # a look before opening: a FIFO or device is never even opened in the usual case
            mode = os.stat(names[-1], dir_fd=folder, follow_symlinks=False).st_mode
            if not stat.S_ISREG(mode):
                raise NotServed(f"not a regular file: {_kind(mode)}")
            fd = os.open(names[-1], _FLAGS | _NOFOLLOW | _NONBLOCK, dir_fd=folder)
        except OSError as exc:
            raise _not_served(exc, "not a regular file or missing") from None
    finally:
        os.close(folder)
    return _read_fd(fd, names[-1], max_bytes)


def _read_fd(fd: int, name: str, max_bytes: int) -> Photo:
    """Read the whole file from ``fd`` once ``fstat`` says a regular file of at most ``max_bytes``."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between the look and the open
            raise NotServed(f"not a regular file: {_kind(info.st_mode)}")
        if info.st_size > max_bytes:
            raise NotServed(f"{info.st_size} bytes, more than the {max_bytes // (1024 * 1024)} MB served")
        if _NONBLOCK:
            os.set_blocking(fd, True)
        parts, total = [], 0
        while True:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise NotServed(f"more than the {max_bytes // (1024 * 1024)} MB served")
        return Photo(b"".join(parts), os.path.splitext(name)[1].lower())
    except OSError as exc:
        raise _not_served(exc, "cannot be read") from None
    finally:
        os.close(fd)


def _read_resolved(path: str, root: str, max_bytes: int) -> Photo:
    """Without ``openat``: the resolved path must be the path itself below the resolved root."""
    real_root = os.path.realpath(root)
    if os.path.realpath(path) != os.path.join(real_root, os.path.relpath(path, root)):
        raise NotServed("a link below its photo folder")
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise NotServed(f"not a regular file: {_kind(mode)}")
        fd = os.open(path, _FLAGS | _NONBLOCK)
    except OSError as exc:
        raise _not_served(exc, "not a regular file or missing") from None
    return _read_fd(fd, os.path.basename(path), max_bytes)


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "a special file")


def _not_served(exc: OSError, what: str) -> NotServed:
    if exc.errno in _BUSY:
        return NotServed(f"the server is out of {'memory' if exc.errno == errno.ENOMEM else 'file descriptors'}",
                         busy=True)
    if exc.errno == errno.ENOENT:
        return NotServed("no such file")
    if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW on a link: ELOOP (EMLINK on FreeBSD)
        return NotServed(f"{what} (a symbolic link)")
    return NotServed(f"{what} ({os.strerror(exc.errno) if exc.errno else exc})")
