"""Reading and verifying a bundle (see docs/bundle-format.md) — a directory or a ``.dagnn`` zip archive.

A bundle's identity is ``bundle_digest``: the SHA-256 of its canonical manifest, which lists the SHA-256 of
every other file, so one hex string pins everything that runs. The exporter stores that digest in the
manifest itself, which lets the loader notice a hand-edited manifest (swapped labels, changed thresholds)
even when the caller pins nothing; older bundles without the field still load, without that self-check.
Every value the runtime relies on is validated with an error naming the field, every listed file is
checked against its digest (streaming, sizes capped, see ``bundle_io``) before anything uses it: the small
files when the bundle is opened, a graph (tens of MB) and its weights file when ``Bundle.read_graph`` and
``Bundle.read_weights`` ask for them, so that a command needing one encoder neither reads nor hashes the
other (every listed file must be present when the bundle is opened). Graph input/output checks happen in
``graph_session.check_signature`` once onnxruntime has parsed a graph.
"""
from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bundle_io, int8_kernels
from .bundle_io import MANIFEST, check_member_name
from .digests import DIGEST_FIELD, HEX64, bundle_digest, embedding_space_id, expected_digest
from .errors import BundleError, shorten
from .graph_weights import check_weights_length, check_weights_spec, weight_arrays
from .jsonio import loads as json_loads

log = logging.getLogger(__name__)

FORMAT = "dagnn-bundle"
FORMAT_VERSIONS = (1, 2, 3)  # 2: the text graph takes tag ids; 3: graph weights may sit in a .data file
GRAPHS = ("image_encoder", "text_encoder")
MAX_LABELS = 100_000
MAX_EMBEDDING_DIM = 1 << 16
MAX_IMAGE_SIZE = 4096
# onnxruntime session config entries a bundle may set per graph (``graphs.*.session_config``), with their
# allowed values: a bundle chooses how precisely its graph is computed, never arbitrary onnxruntime options.
SESSION_CONFIG_ALLOWED = {"session.x64quantprecision": ("0", "1")}


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
    graph_weights: dict              # graph -> its ``weights`` entry (format 3), or None: weights inside
    embedding_dim: int
    image_size: int
    embedding_space: str
    digest: str = ""                 # bundle_digest, the identity of the whole bundle
    self_checked: bool = False       # the manifest carried its digest and it matched

    def read_graph(self, graph: str) -> bytes:
        """The ONNX bytes of ``graph``, read now and checked against the manifest's SHA-256 (the file may
        have changed since the bundle was opened: a changed one is refused, naming it)."""
        return self._read_large([self.graph_files[graph]], keep=True)[0]

    def read_weights(self, graph: str) -> dict:
        """The tensors ``graph`` keeps in its weights file, by initializer name, read and checked like
        ``read_graph`` ({} for a graph that holds its weights itself); a file longer or shorter than its listed
        tensors is refused (``graph_weights.weight_arrays``)."""
        spec = self.graph_weights[graph]
        if spec is None:
            return {}
        return weight_arrays(spec, self._read_large([spec["file"]], keep=True)[0], self.source)

    def verify_graphs(self) -> None:
        """Check every graph and weights file against its SHA-256 now, streaming, and each weights file's
        length against its listed tensors (``read_bundle`` leaves both to first use)."""
        self._read_large(large_files(self.graph_files, self.graph_weights), keep=False)
        reader = bundle_io.open_reader(Path(self.source))
        try:
            for spec in self.graph_weights.values():
                if spec is not None:
                    check_weights_length(spec, reader.size(spec["file"]), self.source)
        finally:
            reader.close()

    def _read_large(self, names, keep: bool) -> list:
        reader = bundle_io.open_reader(Path(self.source))
        try:
            return [bundle_io.verify_file(reader, name, self.manifest["files"][name], bundle_io.MAX_GRAPH_BYTES,
                                          keep=keep) for name in names]
        finally:
            reader.close()


def large_files(graph_files: dict, graph_weights: dict) -> list:
    """The graphs and their weights files: read when an encoder is first used, not when the bundle opens."""
    return [*graph_files.values(), *(w["file"] for w in graph_weights.values() if w is not None)]


def read_bundle(path, expect_digest: str | None = None) -> Bundle:
    """Open, verify and parse the bundle at ``path``; raises ``BundleError`` naming the problem.
    ``expect_digest``: refuse any bundle whose ``bundle_digest`` differs (pinning one exact bundle)."""
    expect_digest = expected_digest(expect_digest)
    path = Path(path)
    if not path.exists():
        from .atomic import recover  # a writer may have died between its two renames
        recover(path)
    reader = bundle_io.open_reader(path)
    try:
        return _read(reader, str(path), expect_digest)
    finally:
        reader.close()


def _read(reader, source: str, expect_digest: str | None) -> Bundle:
    raw = bundle_io.read_small(reader, MANIFEST, bundle_io.MAX_MANIFEST_BYTES)
    if raw is None:
        raise BundleError(f"bundle {source}: missing {MANIFEST}")
    manifest = json_loads(raw, f"bundle {source}: {MANIFEST}", error=BundleError,
                          max_bytes=bundle_io.MAX_MANIFEST_BYTES)
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle {source}: {MANIFEST} is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {source}: format {manifest.get('format')!r} is not {FORMAT!r}")
    version = manifest.get("format_version")
    if version not in FORMAT_VERSIONS:
        raise BundleError(f"bundle {source}: format_version {version!r} is not supported by this runtime "
                          f"(supported: {', '.join(map(str, FORMAT_VERSIONS))}); upgrade dagnn or re-export")
    digest = bundle_digest(manifest)
    if expect_digest is not None and digest != expect_digest:
        raise BundleError(f"bundle {source}: its digest {digest} is not the expected {expect_digest}")
    spec = _validate(manifest, source)
    stored = manifest.get(DIGEST_FIELD)
    if stored is None:
        log.info("bundle %s: manifest without %s (older export): identity only, no self-check", source, DIGEST_FIELD)
    elif stored != digest:
        raise BundleError(f"bundle {source}: {MANIFEST} was changed after export (its {DIGEST_FIELD} does not "
                          "match its content); re-export the bundle instead of editing the manifest")

    # Every listed file must be there; all but the graphs and their weights are verified now, before any of
    # them is used (those when first read, see Bundle.read_graph); keep only those the runtime uses.
    listed = spec["files"]
    reader.check_members(listed)
    graph_files = [spec["graphs"][g] for g in GRAPHS]
    large = large_files(spec["graphs"], spec["weights"])
    keep = {spec["classifiers"], spec["vocab"]}
    content = {}
    for name, file_digest in listed.items():
        if name in large:
            size = reader.size(name)
            if size is None:
                raise BundleError(f"bundle {source}: missing file {name!r} (listed in {MANIFEST})")
            if size > bundle_io.MAX_GRAPH_BYTES:
                raise BundleError(f"bundle {source}: {name!r} is {size} bytes, more than the "
                                  f"{bundle_io.MAX_GRAPH_BYTES}-byte limit")
            continue
        data = bundle_io.verify_file(reader, name, file_digest, bundle_io.MAX_OTHER_BYTES, keep=name in keep)
        if data is not None:
            content[name] = data

    space = embedding_space_id(listed, large, spec["classifiers"])
    if manifest.get("embedding_space") != space:
        raise BundleError(f"bundle {source}: {MANIFEST} 'embedding_space' does not match the digests of "
                          f"{', '.join(large)} and {spec['classifiers']}")

    labels, d = manifest["labels"], manifest["embedding_dim"]
    vocab_file = spec["vocab"]
    try:
        vocab = content[vocab_file].decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BundleError(f"bundle {source}: {vocab_file!r} is not UTF-8 text") from exc
    vocab = [t.strip() for t in vocab if t.strip()]
    if len(set(vocab)) != len(vocab):
        raise BundleError(f"bundle {source}: {vocab_file!r} has duplicate tags")
    vsize = manifest["vocabulary"]["size"]
    if vsize != len(vocab):
        raise BundleError(f"bundle {source}: {vocab_file!r} has {len(vocab)} tags, manifest says {vsize}")

    classifiers_file = spec["classifiers"]
    try:
        z = np.load(io.BytesIO(content[classifiers_file]), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(f"bundle {source}: {classifiers_file!r} is not a readable .npy array ({exc})") from exc
    if z.ndim != 2 or z.shape != (len(labels), d):
        raise BundleError(f"bundle {source}: {classifiers_file!r} has shape {tuple(z.shape)}, expected "
                          f"({len(labels)} labels, embedding_dim {d}) as the manifest declares")
    if not np.issubdtype(z.dtype, np.floating):
        raise BundleError(f"bundle {source}: {classifiers_file!r} must hold finite floats")
    with np.errstate(over="ignore"):  # a float64 value past float32's range becomes inf, refused below
        z = np.ascontiguousarray(z, dtype=np.float32)
    if not np.isfinite(z).all():
        raise BundleError(f"bundle {source}: {classifiers_file!r} must hold finite floats (within float32's "
                          "range: label scores are computed in float32)")
    z.flags.writeable = False

    return Bundle(source=source, manifest=manifest, labels=tuple(labels), vocab=tuple(vocab), classifiers=z,
                  thresholds=spec["thresholds"], graph_files=dict(zip(GRAPHS, graph_files)),
                  graph_weights=spec["weights"],
                  embedding_dim=d, image_size=manifest["preprocessing"]["size"], embedding_space=space,
                  digest=digest, self_checked=stored is not None)


def session_config(manifest: dict, graph: str, source: str) -> dict:
    """The onnxruntime session config entries recorded for ``graph`` ({} when absent), each key and value
    checked against ``SESSION_CONFIG_ALLOWED``: the graph's figures were measured with exactly these."""
    value = manifest["graphs"][graph].get("session_config", {})
    field = f"graphs.{graph}.session_config"
    if not isinstance(value, dict):
        raise BundleError(f"bundle {source}: {MANIFEST} field {field!r} must be an object")
    for key, v in value.items():
        if key not in SESSION_CONFIG_ALLOWED:
            raise BundleError(f"bundle {source}: {MANIFEST} field {field!r} sets {shorten(key)}, which is not "
                              f"allowed (allowed: {', '.join(SESSION_CONFIG_ALLOWED)})")
        if v not in SESSION_CONFIG_ALLOWED[key]:
            raise BundleError(f"bundle {source}: {MANIFEST} field {f'{field}.{key}'!r} is {shorten(v)}, "
                              f"not one of {', '.join(SESSION_CONFIG_ALLOWED[key])}")
    return dict(value)


def _validate(manifest: dict, source: str) -> dict:
    """Check the manifest's own values, naming the field; returns the file names and thresholds."""
    def bad(field: str, problem: str):
        return BundleError(f"bundle {source}: {MANIFEST} field {field!r} {problem}")

    listed = _field(manifest, "files", dict, source)
    for name, digest in listed.items():
        check_member_name(name, f"bundle {source}")
        if name == MANIFEST:
            raise BundleError(f"bundle {source}: {MANIFEST} cannot list itself in 'files'")
        if not isinstance(digest, str) or not HEX64.match(digest.lower()):
            raise bad(f"files.{name}", "is not a SHA-256 hex digest")
    names = {g: check_member_name(_field(manifest, f"graphs.{g}.file", str, source), f"bundle {source}")
             for g in GRAPHS}
    for g in GRAPHS:
        _field(manifest, f"graphs.{g}.input", str, source)
        outputs = _field(manifest, f"graphs.{g}.outputs", list, source)
        if not all(isinstance(o, str) for o in outputs):
            raise bad(f"graphs.{g}.outputs", "must be a list of output names")
        session_config(manifest, g, source)
        int8_kernels.requirement(manifest, g, source)
    weights = {g: check_weights_spec(manifest, g, source) for g in GRAPHS}
    classifiers = check_member_name(_field(manifest, "classifiers.file", str, source), f"bundle {source}")
    vocab = check_member_name(_field(manifest, "vocabulary.file", str, source), f"bundle {source}")
    named = [*names.values(), *(w["file"] for w in weights.values() if w), classifiers, vocab]
    if len(set(named)) != len(named):
        raise BundleError(f"bundle {source}: {MANIFEST} names one file for two roles ({', '.join(named)})")
    for name in named:
        if name not in listed:
            raise BundleError(f"bundle {source}: {MANIFEST} 'files' does not list {name!r}, so it cannot be verified")

    labels = _field(manifest, "labels", list, source)
    if not labels or len(labels) > MAX_LABELS or not all(isinstance(x, str) and x for x in labels) \
            or len(set(labels)) != len(labels):
        raise bad("labels", f"must hold 1 to {MAX_LABELS} distinct non-empty strings")
    d = _field(manifest, "embedding_dim", int, source)
    if not 1 <= d <= MAX_EMBEDDING_DIM:
        raise bad("embedding_dim", f"is {d}, not between 1 and {MAX_EMBEDDING_DIM}")
    size = _field(manifest, "preprocessing.size", int, source)
    if not 1 <= size <= MAX_IMAGE_SIZE:
        raise bad("preprocessing.size", f"is {size}, not between 1 and {MAX_IMAGE_SIZE}")
    if _field(manifest, "vocabulary.size", int, source) < 1:
        raise bad("vocabulary.size", "must be positive")
    shape = _field(manifest, "classifiers.shape", list, source)
    if shape != [len(labels), d]:
        raise bad("classifiers.shape", f"is {shape}, but there are {len(labels)} labels of embedding_dim {d} "
                                        f"(classifiers.npy shape must be [{len(labels)}, {d}])")

    values = _field(manifest, "thresholds.values", list, source)
    if len(values) != len(labels):
        raise BundleError(f"bundle {source}: {len(values)} thresholds for {len(labels)} labels")
    thresholds = []
    for j, (label, v) in enumerate(zip(labels, values)):
        if v is None:  # a label that validation never saw: never predicted
            v = math.inf
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (-1 <= v <= 1 or v == math.inf):
            raise bad(f"thresholds.values[{j}]", f"(label {label!r}) is {v!r}: a threshold is a cosine in "
                                                 "[-1, 1], or null for a label that is never predicted")
        thresholds.append(v)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    thresholds.flags.writeable = False
    return {"files": listed, "graphs": names, "weights": weights, "classifiers": classifiers, "vocab": vocab,
            "thresholds": thresholds}
