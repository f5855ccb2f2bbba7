"""The index database file: its schema, its atomic creation, the checks of its meta table, the folder lock."""
from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path

from .. import jsonio
from ..errors import IndexFileError

DB_FILE = "index.db"
FORMAT = "dagnn-index"
FORMAT_VERSION = 2

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                    metadata TEXT NOT NULL, vector BLOB NOT NULL, crc INTEGER);
CREATE TABLE removals (seq INTEGER PRIMARY KEY AUTOINCREMENT, item_seq INTEGER NOT NULL);
"""


def row_checksum(item_id: str, record: str, vector: bytes) -> int:
    """CRC-32 of an item row: a page cut or changed on disk can pass SQLite's own checks while a vector
    changes; the checksum, written with the row and checked when it is replayed, says so."""
    crc = zlib.crc32(item_id.encode("utf-8", "surrogatepass"))
    crc = zlib.crc32(b"\0" + record.encode("utf-8", "surrogatepass"), crc)
    return zlib.crc32(b"\0" + bytes(vector), crc)


def with_checksums(rows):
    """(seq, id, metadata, vector) rows with their ``row_checksum`` appended."""
    return [(*row, row_checksum(row[1], row[2], row[3])) for row in rows]


class FileWatch:
    """The identity (device, inode) of ``index.db`` and of its WAL file as this process opened them. A
    program that removes or replaces them under an open store would make the writes the store goes on
    acknowledging vanish at the next restart; ``check`` says so before each write instead."""

    def __init__(self, path: Path):
        self.path, self.wal_path = path, path.with_name(path.name + "-wal")
        self.db, self.wal = _identity(self.path), None

    def check(self, folder) -> None:
        if _identity(self.path) != self.db:
            raise IndexFileError(f"index {folder}: {DB_FILE} was removed or replaced while open; writes are "
                                 "refused until the index is opened again (restart the server)")
        if self.wal is not None and _identity(self.wal_path) != self.wal:
            raise IndexFileError(f"index {folder}: {DB_FILE}-wal was removed or replaced while open; writes "
                                 "are refused until the index is opened again (restart the server)")

    def written(self) -> None:
        """After a commit: the WAL file this connection writes to exists now."""
        self.wal = _identity(self.wal_path)


def _identity(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def add_checksum_column(conn) -> None:
    """Give a store made before row checksums its ``crc`` column (NULL: that row is not checked)."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(items)")]
    if "crc" not in columns:
        conn.execute("ALTER TABLE items ADD COLUMN crc INTEGER")


@contextmanager
def sqlite_errors(folder, doing: str, busy_timeout: float):
    """Turn SQLite's exceptions into one-line IndexFileErrors that name the index."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise  # the caller explains it (duplicate id)
    except sqlite3.ProgrammingError as exc:
        raise IndexFileError(f"index {folder}: {doing} failed ({exc}); was the index closed?") from exc
    except sqlite3.OperationalError as exc:
        msg = str(exc)
        if "full" in msg:
            raise IndexFileError(f"index {folder}: disk full while {doing}; nothing was changed") from exc
        if "locked" in msg or "busy" in msg:
            raise IndexFileError(f"index {folder}: another process kept it locked for more than "
                                 f"{busy_timeout:g} s while {doing}") from exc
        raise IndexFileError(f"index {folder}: {doing} failed ({msg})") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise IndexFileError(f"index {folder}: {DB_FILE} is corrupt ({exc})") from exc


def is_store(folder) -> bool:
    return (Path(folder) / DB_FILE).is_file()


@contextmanager
def folder_lock(folder, blocking: bool = True):
    """An advisory lock on the index folder for jobs beside the database (creating it, writing graph
    checkpoints, converting, removing leftovers); yields whether it was taken. The kernel drops it when
    its process dies, so kill -9 never leaves it held. Without ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield False
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing drops the lock


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_db(folder: Path, meta: dict, rows=(), last_seq: int = 0) -> bool:
    """Build the database with ``meta`` and ``rows`` (batches of (seq or None, id, metadata JSON,
    float32 vector bytes); later items get seqs above ``last_seq``) under a temporary name, then link
    it into place: no one ever sees it half-made. The caller holds the folder lock. Returns whether
    this call created it (False: it existed already)."""
    if (folder / DB_FILE).exists():
        return False
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{DB_FILE}.tmp-")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.executescript(_SCHEMA)
            version = {"format": FORMAT, "format_version": FORMAT_VERSION}
            conn.executemany("INSERT INTO meta VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in {**meta, **version}.items()])
            conn.execute("BEGIN")
            for batch in rows:
                conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", with_checksums(batch))
            if last_seq:  # sqlite_sequence is where AUTOINCREMENT keeps the last seq it gave
                conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'items'", (last_seq,))
                conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'items', ? WHERE NOT EXISTS "
                             "(SELECT 1 FROM sqlite_sequence WHERE name = 'items')", (last_seq,))
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=WAL")  # persistent in the file
        finally:
            conn.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, folder / DB_FILE)  # no-replace; the folder lock keeps other creators out
        fsync_dir(folder)
    except (OSError, sqlite3.Error) as exc:
        raise IndexFileError(f"index {folder}: cannot create {DB_FILE} ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return True


def checked_meta(folder: Path, rows) -> dict:
    """The meta table's (key, JSON text) ``rows`` decoded and checked. An index folder may come from
    anywhere, so its JSON is read with bounds like any input, and a damaged table is an IndexFileError."""
    try:
        meta = {str(k): jsonio.loads(v, f"index {folder}: {DB_FILE} meta {str(k)[:40]!r}", error=IndexFileError)
                for k, v in rows}
    except TypeError as exc:
        raise IndexFileError(f"index {folder}: {DB_FILE} meta holds a value that is not text") from exc
    if meta.get("format") != FORMAT:
        raise IndexFileError(f"index {folder}: {DB_FILE} is not a dagnn index (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexFileError(f"index {folder}: format_version {meta.get('format_version')!r} "
                             f"is not supported (supported: {FORMAT_VERSION}); a newer dagnn wrote it?")
    dim, space, digest = meta.get("dim"), meta.get("embedding_space"), meta.get("bundle_digest")
    if (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or not space
            or not isinstance(space, str) or not isinstance(digest, (str, type(None)))):
        raise IndexFileError(f"index {folder}: {DB_FILE} meta is damaged (dim, embedding_space "
                             "or bundle_digest missing or of the wrong type)")
    return meta


def check_joinable(folder, found: dict, dim: int, space: str, digest: str | None) -> None:
    """An index another process created at ``folder`` meanwhile (meta ``found``) may be joined by an empty
    one meant for embeddings of ``space`` (``dim``-d) by bundle ``digest``; else MismatchError."""
    from ..errors import MismatchError

    if (found["embedding_space"], found["dim"]) != (space, dim):
        raise MismatchError(f"index {folder} exists already, with embeddings of another space")
    theirs = found.get("bundle_digest")
    if theirs and digest and theirs != digest:
        raise MismatchError(f"index {folder} exists already, built with another bundle")
