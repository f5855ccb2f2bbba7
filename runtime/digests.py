"""A bundle's digests: its identity (``bundle_digest``), the id of its embedding space, and the SHA-256 of
files, computed the one way the exporter writes them and the loader checks them (docs/bundle-format.md)."""
from __future__ import annotations

import hashlib
import json
import re

from .errors import InputError, shorten

DIGEST_FIELD = "bundle_digest"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


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
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of ``files`` restricted to the graphs (with
    their weights files, format 3) and the classifiers: two bundles share an embedding space exactly when
    these files are identical."""
    return sha256_hex(canonical_json({name: files[name] for name in (*graph_files, classifiers_file)}))


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def bundle_digest(manifest: dict, default=None) -> str:
    """The bundle's identity: SHA-256 of the canonical manifest without its own ``bundle_digest`` field.
    ``default`` serialises non-JSON values the way the writer does (the exporter passes its own), so the
    digest is that of the manifest as it will be read back."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    return sha256_hex(canonical_json(json.loads(json.dumps(body, default=default))))


def expected_digest(value) -> str | None:
    """A pinned ``bundle_digest`` as given by a user (None: no pin), checked and lower-cased."""
    if value is None:
        return None
    if not isinstance(value, str) or not HEX64.match(value.strip().lower()):
        raise InputError(f"expected digest {shorten(value)} is not a 64-digit SHA-256 hex string")
    return value.strip().lower()
