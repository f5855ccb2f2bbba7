"""Reading and verifying a bundle (see docs/bundle-format.md) — a directory or a ``.dagnn`` zip archive.

Every file is checked against its SHA-256 before anything uses it, so what runs is exactly what was
exported. The manifest and the small files are read and verified when the bundle is opened; every listed
file must be present then. A graph (tens of MB) is read and verified only when ``Bundle.read_graph`` asks
for it, so that a command needing one encoder neither reads nor hashes the other. Graph input/output checks
happen in ``session.py`` once onnxruntime has parsed a graph.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import BundleError

FORMAT = "dagnn-bundle"
FORMAT_VERSIONS = (1, 2)  # 2: the text graph takes padded tag ids (docs/bundle-format.md)
MANIFEST = "manifest.json"
GRAPHS = ("image_encoder", "text_encoder")
MAX_MANIFEST_BYTES = 64 << 20
MAX_FILE_BYTES = 2 << 30  # protobuf (ONNX) cannot hold more than 2 GiB anyway


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path) -> str:
    """SHA-256 of a file, read in blocks (graphs and caches can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def embedding_space_id(files: dict, graph_files, classifiers_file: str) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of ``files`` restricted to the two graphs and
    the classifiers: two bundles share an embedding space exactly when these three files are identical."""
    subset = {name: files[name] for name in (*graph_files, classifiers_file)}
    return sha256_hex(json.dumps(subset, sort_keys=True, separators=(",", ":")).encode())


def _check_member_name(name: str, where: str) -> str:
    """Bundle files are plain names inside the bundle: no folders, no ``..``, nothing absolute."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\x00" in name or ":" in name:
        raise BundleError(f"{where}: file name {name!r} is not a plain file name inside the bundle")
    return name


class _DirReader:
    def __init__(self, root: Path):
        self.root = root
        self.resolved = root.resolve()

    def size(self, name: str) -> int | None:
        path = self.root / name
        return path.stat().st_size if path.is_file() else None

    def read(self, name: str, limit: int) -> bytes | None:
        path = self.root / name
        if not path.is_file():
            return None
        if self.resolved not in path.resolve().parents:
            raise BundleError(f"bundle {self.root}: {name!r} points outside the bundle folder")
        size = path.stat().st_size
        if size > limit:
            raise BundleError(f"bundle {self.root}: {name!r} is {size} bytes, more than the {limit}-byte limit")
        return path.read_bytes()


class _ZipReader:
    """Reads members straight into memory (nothing is extracted). Members may sit at the archive root or
    in one top-level folder (what zipping a bundle folder gives)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise BundleError(f"bundle {path}: not a readable zip archive ({exc})") from exc
        for info in infos:
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise BundleError(f"bundle {path}: member {info.filename!r} would escape the archive")
        members = {info.filename: info for info in infos if not info.is_dir()}
        if MANIFEST in members:
            prefix = ""
        else:
            nested = [n for n in members if n.count("/") == 1 and n.endswith("/" + MANIFEST)]
            if len(nested) != 1:
                raise BundleError(f"bundle {path}: no {MANIFEST} at the top of the archive")
            prefix = nested[0][: -len(MANIFEST)]
        self.members = {n[len(prefix):]: info for n, info in members.items() if n.startswith(prefix)}

    def size(self, name: str) -> int | None:
        info = self.members.get(name)
        return None if info is None else info.file_size

    def read(self, name: str, limit: int) -> bytes | None:
        info = self.members.get(name)
        if info is None:
            return None
        if info.file_size > limit:
            raise BundleError(f"bundle {self.path}: member {name!r} declares {info.file_size} bytes, "
                              f"more than the {limit}-byte limit")
        try:
            with self.zf.open(info) as f:
                data = f.read(limit + 1)  # do not trust the declared size
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
            raise BundleError(f"bundle {self.path}: cannot read member {name!r} ({exc})") from exc
        if len(data) > limit:
            raise BundleError(f"bundle {self.path}: member {name!r} is larger than the {limit}-byte limit")
        return data

    def close(self):
        self.zf.close()


def _open_reader(path: Path):
    if path.is_dir():
        return _DirReader(path)
    if path.is_file():
        return _ZipReader(path)
    raise BundleError(f"bundle {path}: no such file or directory")


def _field(manifest: dict, dotted: str, kind, source: str):
    value = manifest
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise BundleError(f"bundle {source}: {MANIFEST} lacks {dotted!r}")
        value = value[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise BundleError(f"bundle {source}: {MANIFEST} field {dotted!r} has the wrong type "
                          f"({type(value).__name__})")
    return value


@dataclass(frozen=True)
class Bundle:
    """The verified content of a bundle. Arrays are read-only."""

    source: str
    manifest: dict
    labels: tuple
    vocab: tuple
    classifiers: np.ndarray          # Z, (c, d) float32
    thresholds: np.ndarray           # (c,) float32, +inf = never predicted
    graph_files: dict                # "image_encoder"/"text_encoder" -> file name in the bundle
    embedding_dim: int
    image_size: int
    embedding_space: str

    def read_graph(self, graph: str) -> bytes:
        """The ONNX bytes of ``graph``, read now and verified against the manifest's SHA-256 (the file may
        have changed since the bundle was opened; a changed one is refused, naming it)."""
        name = self.graph_files[graph]
        reader = _open_reader(Path(self.source))
        try:
            return _read_verified(reader, name, self.manifest["files"][name], self.source)
        finally:
            if isinstance(reader, _ZipReader):
                reader.close()


def read_bundle(path) -> Bundle:
    """Open the bundle at ``path``: parse and verify the manifest and the small files, check that every listed
    file is there; raises ``BundleError`` naming the problem. Graphs are verified by ``Bundle.read_graph``."""
    path = Path(path)
    reader = _open_reader(path)
    try:
        return _read(reader, str(path))
    finally:
        if isinstance(reader, _ZipReader):
            reader.close()


def _read_verified(reader, name: str, digest, source: str) -> bytes:
    data = reader.read(name, MAX_FILE_BYTES)
    if data is None:
        raise BundleError(f"bundle {source}: missing file {name!r} (listed in {MANIFEST})")
    if not isinstance(digest, str) or sha256_hex(data) != digest.lower():
        raise BundleError(f"bundle {source}: file {name!r} does not match its SHA-256 in {MANIFEST} "
                          "(the file was changed or is corrupt)")
    return data


def _read(reader, source: str) -> Bundle:
    raw = reader.read(MANIFEST, MAX_MANIFEST_BYTES)
    if raw is None:
        raise BundleError(f"bundle {source}: missing {MANIFEST}")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"bundle {source}: {MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle {source}: {MANIFEST} is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {source}: format {manifest.get('format')!r} is not {FORMAT!r}")
    version = manifest.get("format_version")
    if version not in FORMAT_VERSIONS:
        raise BundleError(f"bundle {source}: format_version {version!r} is not supported by this runtime "
                          f"(supported: {', '.join(map(str, FORMAT_VERSIONS))}); upgrade dagnn or re-export")

    listed = _field(manifest, "files", dict, source)
    graph_files = [_check_member_name(_field(manifest, f"graphs.{g}.file", str, source), source) for g in GRAPHS]
    classifiers_file = _check_member_name(_field(manifest, "classifiers.file", str, source), source)
    vocab_file = _check_member_name(_field(manifest, "vocabulary.file", str, source), source)
    for name in (*graph_files, classifiers_file, vocab_file):
        if name not in listed:
            raise BundleError(f"bundle {source}: {MANIFEST} 'files' does not list {name!r}, so it cannot be verified")

    # Every listed file must be there; all but the graphs are verified now, before any of them is used.
    content = {}
    for name, digest in listed.items():
        _check_member_name(name, source)
        if name == MANIFEST:
            raise BundleError(f"bundle {source}: {MANIFEST} cannot list itself in 'files'")
        if not isinstance(digest, str):
            raise BundleError(f"bundle {source}: {MANIFEST} gives no SHA-256 string for {name!r}")
        if name in graph_files:
            size = reader.size(name)
            if size is None:
                raise BundleError(f"bundle {source}: missing file {name!r} (listed in {MANIFEST})")
            if size > MAX_FILE_BYTES:
                raise BundleError(f"bundle {source}: {name!r} is {size} bytes, more than the "
                                  f"{MAX_FILE_BYTES}-byte limit")
            continue
        content[name] = _read_verified(reader, name, digest, source)

    space = embedding_space_id(listed, graph_files, classifiers_file)
    if manifest.get("embedding_space") != space:
        raise BundleError(f"bundle {source}: {MANIFEST} 'embedding_space' does not match the digests of "
                          f"{graph_files[0]}, {graph_files[1]} and {classifiers_file}")

    labels = _field(manifest, "labels", list, source)
    if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
        raise BundleError(f"bundle {source}: {MANIFEST} 'labels' must be distinct non-empty strings")
    d = _field(manifest, "embedding_dim", int, source)
    size = _field(manifest, "preprocessing.size", int, source)
    if d <= 0 or size <= 0:
        raise BundleError(f"bundle {source}: embedding_dim and preprocessing.size must be positive")

    try:
        vocab = content[vocab_file].decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BundleError(f"bundle {source}: {vocab_file!r} is not UTF-8 text") from exc
    vocab = [t.strip() for t in vocab if t.strip()]
    if len(set(vocab)) != len(vocab):
        raise BundleError(f"bundle {source}: {vocab_file!r} has duplicate tags")
    vsize = _field(manifest, "vocabulary.size", int, source)
    if vsize != len(vocab):
        raise BundleError(f"bundle {source}: {vocab_file!r} has {len(vocab)} tags, manifest says {vsize}")

    try:
        z = np.load(io.BytesIO(content[classifiers_file]), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BundleError(f"bundle {source}: {classifiers_file!r} is not a readable .npy array ({exc})") from exc
    declared = _field(manifest, "classifiers.shape", list, source)
    if z.ndim != 2 or list(z.shape) != declared or z.shape != (len(labels), d):
        raise BundleError(f"bundle {source}: {classifiers_file!r} has shape {tuple(z.shape)}, expected "
                          f"({len(labels)} labels, embedding_dim {d}) as the manifest declares {declared}")
    if not np.issubdtype(z.dtype, np.floating) or not np.isfinite(z).all():
        raise BundleError(f"bundle {source}: {classifiers_file!r} must hold finite floats")
    z = np.ascontiguousarray(z, dtype=np.float32)
    z.flags.writeable = False

    values = _field(manifest, "thresholds.values", list, source)
    if len(values) != len(labels):
        raise BundleError(f"bundle {source}: {len(values)} thresholds for {len(labels)} labels")
    thresholds = []
    for label, v in zip(labels, values):
        if v is None:  # a label that validation never saw: never predicted
            v = math.inf
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise BundleError(f"bundle {source}: threshold of label {label!r} is not a number ({v!r})")
        thresholds.append(v)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    thresholds.flags.writeable = False

    return Bundle(source=source, manifest=manifest, labels=tuple(labels), vocab=tuple(vocab), classifiers=z,
                  thresholds=thresholds, graph_files=dict(zip(GRAPHS, graph_files)),
                  embedding_dim=d, image_size=size, embedding_space=space)
