"""The Milvus side of the Milvus backend: collection schema, rows, filter expressions, connections and errors.

Kept apart from ``milvus.py`` (the ``VectorIndex`` itself) so each stays one job. Filter expressions are
built here with JSON string escaping, because Milvus Lite does not accept pymilvus' filter templates and
pymilvus' own ``ids=`` helpers do not escape quotes. pymilvus is imported lazily (the ``[milvus]`` extra).
"""
from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import DagnnError, IndexFileError, InputError, install_hint

FORMAT = "dagnn-milvus-index"
FORMAT_VERSION = "1"
MAX_ID_BYTES = 1024
MAX_LABELS, MAX_LABEL_BYTES = 256, 256
MAX_K = 16384                # Milvus' limit on top-k
BATCH = 1000                 # rows per insert/query request (4 MB of vectors at 1024-d)
INDEX_TYPES = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 1024}}
LABEL_FIELDS = ("labels", "predicted_labels")
_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")


def is_milvus_location(location) -> bool:
    """A Milvus Lite file (``*.db``) or a server URI: the locations that pick this backend."""
    text = str(location)
    return text.endswith(".db") or text.startswith(("http://", "https://", "tcp://"))


def collection_name(prefix: str = "dagnn", modality: str | None = None) -> str:
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise InputError(f"collection prefix must be letters, digits or '_' (not first a digit), got {prefix!r:.80}")
    return f"{prefix}_{modality or 'items'}"


def literal(values) -> str:
    """A Milvus expression list literal of strings (JSON escaping is what Milvus' parser reads)."""
    return json.dumps(list(values), ensure_ascii=False)


def _one_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return re.sub(r"\s+", " ", str(text)).strip()[:200]


def shown(uri: str) -> str:
    return re.sub(r"//[^@/]*@", "//", uri)  # never show user:password@ of a URI


@contextmanager
def wrapped(where: str, action: str):
    """pymilvus errors (and gRPC ones under them) become one-line IndexFileErrors naming URI and collection."""
    try:
        yield
    except DagnnError:
        raise
    except Exception as exc:  # pymilvus raises MilvusException and lets gRPC/OS errors through
        raise IndexFileError(f"{where}: {action} failed ({_one_line(exc)})") from exc


def connect(uri: str, token, timeout: float, where: str):
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # it logs every failed RPC; we raise instead
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise DagnnError(f"the Milvus backend needs the [milvus] extra ({exc}): {install_hint('milvus')}") from exc
    with wrapped(where, "connect"):
        return MilvusClient(uri=uri, token=token or "", timeout=timeout)


def create_collection(client, name: str, where: str, modality, space: str, dim: int, index_type: str, params=None,
                      digest: str | None = None) -> None:
    from pymilvus import DataType, MilvusClient

    if index_type not in INDEX_TYPES:
        raise InputError(f"index type must be one of {sorted(INDEX_TYPES)}, got {index_type!r:.80}")
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("metadata", DataType.JSON)
    for field in LABEL_FIELDS:
        schema.add_field(field, DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_LABELS,
                         max_length=MAX_LABEL_BYTES)
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", index_type=index_type, metric_type="COSINE",
                           params=params or INDEX_TYPES[index_type])
    props = {"dagnn.format": FORMAT, "dagnn.format_version": FORMAT_VERSION, "dagnn.embedding_space": space,
             "dagnn.modality": modality or "", "dagnn.index_params": json.dumps(params or INDEX_TYPES[index_type]),
             **({"dagnn.bundle_digest": digest} if digest else {})}
    with wrapped(where, "create"):
        client.create_collection(name, schema=schema, index_params=index_params, consistency_level="Strong",
                                 description=f"dagnn {modality or 'items'} embeddings of space {space}",
                                 properties=props)


def to_row(key: str, vector: np.ndarray, record: str) -> dict:
    """A Milvus row of one checked item (``inputs.additions``: key, unit vector, metadata JSON text)."""
    meta = json.loads(record)
    row = {"id": key, "vector": vector.tolist(), "metadata": meta}
    for field in LABEL_FIELDS:
        values = [_label_name(x) for x in (meta.get(field) or [])] if isinstance(meta.get(field) or [], list) else None
        if values is None or None in values:
            raise InputError(f"metadata {field!r} of id {key!r} must be a list of labels (or [label, score])")
        if len(values) > MAX_LABELS or any(len(x.encode()) > MAX_LABEL_BYTES for x in values):
            raise InputError(f"metadata {field!r} of id {key!r}: at most {MAX_LABELS} labels of "
                             f"{MAX_LABEL_BYTES} bytes each")
        row[field] = values
    return row


def _label_name(item):
    """A label as stored in metadata: its name, or a ``[name, score]`` pair / ``{"label": name}`` record."""
    if isinstance(item, (list, tuple)) and item:
        item = item[0]
    elif isinstance(item, dict):
        item = item.get("label")
    return item if isinstance(item, str) else None


def label_filter(labels) -> str:
    if not labels:
        return ""
    labels = [labels] if isinstance(labels, str) else list(labels)
    if not all(isinstance(x, str) for x in labels):
        raise InputError("labels to filter by must be strings")
    return " or ".join(f"ARRAY_CONTAINS_ANY({f}, {literal(labels)})" for f in LABEL_FIELDS)


TOKEN_ENV = "DAGNN_MILVUS_TOKEN"   # where a server token is read from when none is given


def token_of(token):
    return token if token is not None else os.environ.get(TOKEN_ENV)


def collection_exists(uri, modality: str | None = None, *, token: str | None = None, prefix: str = "dagnn",
                      timeout: float = 10.0) -> bool:
    """Whether ``uri`` holds the collection of ``modality`` (a missing Milvus Lite path holds none)."""
    uri = str(uri)
    name = collection_name(prefix, modality)
    if uri.endswith(".db") and not Path(uri).exists():
        return False
    where = f"Milvus {shown(uri)} collection {name}"
    client = connect(uri, token_of(token), timeout, where)
    try:
        with wrapped(where, "look up"):
            return bool(client.has_collection(name))
    finally:
        client.close()
