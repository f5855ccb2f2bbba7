"""Reading the files of a bundle — a folder or a ``.dagnn`` zip archive — with bounded memory.

A bundle comes from elsewhere, so its sizes are checked before anything is read: in an archive from the
zip directory (declared size against a per-file cap, and the compression ratio, which catches zip bombs),
in a folder from ``stat``. Files are then hashed while streaming in 1 MiB blocks and only the few the
runtime uses (graphs, classifiers, vocabulary) are kept in memory, so a listed multi-gigabyte extra is
refused or hashed without ever being held whole. An archive must hold exactly ``manifest.json`` and the
files it lists: a duplicate or unlisted member is refused (a second ``manifest.json`` would otherwise
silently win).
"""
from __future__ import annotations

import hashlib
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import BundleError, shorten

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 8 << 20
MAX_GRAPH_BYTES = 2 << 30        # protobuf (ONNX) cannot hold more than 2 GiB anyway
MAX_OTHER_BYTES = 256 << 20      # classifiers, vocabulary, model card and any other listed file
MAX_RATIO = 200                  # uncompressed / compressed; weights compress ~1.1x, text ~4x
RATIO_FROM_BYTES = 1 << 20       # small members may compress better than that without harm
BLOCK = 1 << 20


def check_member_name(name, where: str) -> str:
    """Bundle files are plain names inside the bundle: no folders, no ``..``, nothing absolute."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\x00" in name or ":" in name:
        raise BundleError(f"{where}: file name {shorten(name)} is not a plain file name inside the bundle")
    return name


class DirReader:
    def __init__(self, root: Path):
        self.root = root
        self.source = str(root)
        self.resolved = root.resolve()

    def size(self, name: str) -> int | None:
        path = self.root / name
        try:
            st = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if self.resolved not in path.resolve().parents:
            raise BundleError(f"bundle {self.source}: {name!r} points outside the bundle folder")
        return st.st_size

    def open(self, name: str):
        return open(self.root / name, "rb")

    def check_members(self, listed) -> None:
        """Extra files in a folder are not read at all, so they are allowed (docs, notes)."""

    def close(self):
        pass


class ZipReader:
    """Reads members straight from the archive (nothing is extracted). Members may sit at the archive root
    or in one top-level folder (what zipping a bundle folder gives)."""

    def __init__(self, path: Path):
        self.path = path
        self.source = str(path)
        try:
            self.zf = zipfile.ZipFile(path)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise BundleError(f"bundle {path}: not a readable zip archive ({exc})") from exc
        files = []
        for info in infos:
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise BundleError(f"bundle {path}: member {shorten(info.filename)} would escape the archive")
            if not info.is_dir():
                files.append(info)
        names = [info.filename for info in files]
        if MANIFEST in names:
            prefix = ""
        else:
            nested = [n for n in names if n.count("/") == 1 and n.endswith("/" + MANIFEST)]
            if len(nested) != 1:
                raise BundleError(f"bundle {path}: no {MANIFEST} at the top of the archive")
            prefix = nested[0][: -len(MANIFEST)]
        self.members = {}
        for info in files:
            name = info.filename
            if not name.startswith(prefix) or "/" in name[len(prefix):]:
                raise BundleError(f"bundle {path}: member {shorten(name)} lies outside the bundle's files")
            name = name[len(prefix):]
            if name in self.members:
                raise BundleError(f"bundle {path}: member {shorten(name)} appears twice in the archive")
            self.members[name] = info

    def size(self, name: str) -> int | None:
        info = self.members.get(name)
        if info is None:
            return None
        if info.file_size > RATIO_FROM_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise BundleError(f"bundle {self.path}: member {name!r} expands {info.compress_size} bytes to "
                              f"{info.file_size} (more than {MAX_RATIO}:1, a zip bomb?)")
        return info.file_size

    def open(self, name: str):
        return self.zf.open(self.members[name])

    def check_members(self, listed) -> None:
        unlisted = sorted(set(self.members) - set(listed) - {MANIFEST})
        if unlisted:
            raise BundleError(f"bundle {self.path}: member {shorten(unlisted[0])} is not listed in {MANIFEST} "
                              f"'files' ({len(unlisted)} unlisted), so it cannot be verified")

    def close(self):
        self.zf.close()


def open_reader(path: Path):
    if path.is_dir():
        return DirReader(path)
    if path.is_file():
        return ZipReader(path)
    raise BundleError(f"bundle {path}: no such file or directory")


def read_small(reader, name: str, limit: int) -> bytes | None:
    """The whole of a small file (the manifest), refused from its declared size when over ``limit``."""
    size = reader.size(name)
    if size is None:
        return None
    if size > limit:
        raise BundleError(f"bundle {reader.source}: {name!r} is {size} bytes, more than the {limit}-byte limit")
    return _stream(reader, name, limit, keep=True)[1]


def verify_file(reader, name: str, digest, limit: int, keep: bool) -> bytes | None:
    """Check ``name`` against its SHA-256, streaming; return its bytes when ``keep``."""
    size = reader.size(name)
    if size is None:
        raise BundleError(f"bundle {reader.source}: missing file {name!r} (listed in {MANIFEST})")
    if size > limit:
        raise BundleError(f"bundle {reader.source}: {name!r} is {size} bytes, more than the {limit}-byte limit")
    actual, data = _stream(reader, name, limit, keep)
    if not isinstance(digest, str) or actual != digest.lower():
        raise BundleError(f"bundle {reader.source}: file {name!r} does not match its SHA-256 in {MANIFEST} "
                          "(the file was changed or is corrupt)")
    return data


def _stream(reader, name: str, limit: int, keep: bool) -> tuple[str, bytes | None]:
    """(SHA-256, bytes or None). A kept file is read in one piece (it is held whole anyway, and joining
    blocks would hold it twice); others are hashed block by block."""
    h, data = hashlib.sha256(), None
    try:
        with reader.open(name) as f:
            if keep:
                data = f.read(limit + 1)
                blocks, total = [data], len(data)
            else:
                blocks, total = iter(lambda: f.read(BLOCK), b""), 0
            for block in blocks:
                total += 0 if keep else len(block)
                if total > limit:  # a file that grew, or an archive whose directory lies
                    raise BundleError(f"bundle {reader.source}: {name!r} is larger than the {limit}-byte limit")
                h.update(block)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError) as exc:
        raise BundleError(f"bundle {reader.source}: cannot read {name!r} ({exc})") from exc
    return h.hexdigest(), data
