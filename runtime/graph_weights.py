"""A graph's weights kept outside its ONNX file (bundle format 3, docs/bundle-format.md).

The exporter moves every large initializer of a graph into ``<graph>.onnx.data``, as standard ONNX external
data, and lists each tensor (name, dtype, shape, byte offset) in ``graphs.<graph>.weights``. The runtime hands
these tensors to onnxruntime as arrays over the verified bytes (``add_external_initializers``), so a session
no longer parses and copies tens of megabytes of protobuf: that parse was most of what a one-off text query
spent on its graph. The manifest carries the list because the runtime does not depend on ``onnx`` to read
the graph's own references.
"""
from __future__ import annotations

import math

import numpy as np

from .bundle_io import MANIFEST, check_member_name
from .errors import BundleError, shorten

ALIGNMENT = 64  # every tensor starts at a multiple of this, so each array is aligned for any kernel
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64")
MAX_TENSORS = 10_000


def check_weights_spec(manifest: dict, graph: str, source: str) -> dict | None:
    """``graphs.<graph>.weights`` checked field by field (None when the graph keeps its weights inside)."""
    field = f"graphs.{graph}.weights"
    spec = manifest["graphs"][graph].get("weights")
    if spec is None:
        return None

    def bad(where: str, problem: str):
        return BundleError(f"bundle {source}: {MANIFEST} field {where!r} {problem}")

    if not isinstance(spec, dict) or not isinstance(spec.get("tensors"), list):
        raise bad(field, "must be an object with 'file' and a list 'tensors'")
    check_member_name(spec.get("file"), f"bundle {source}: {field}.file")
    if not 1 <= len(spec["tensors"]) <= MAX_TENSORS:
        raise bad(f"{field}.tensors", f"must list 1 to {MAX_TENSORS} tensors")
    names = set()
    for i, t in enumerate(spec["tensors"]):
        where = f"{field}.tensors[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise bad(where, "must be an object with a non-empty 'name'")
        if t["name"] in names:
            raise bad(where, f"repeats the tensor name {shorten(t['name'])}")
        names.add(t["name"])
        if t.get("dtype") not in DTYPES:
            raise bad(f"{where}.dtype", f"is {shorten(t.get('dtype'))}, not one of {', '.join(DTYPES)}")
        shape, offset = t.get("shape"), t.get("offset")
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in shape):
            raise bad(f"{where}.shape", "must be a list of non-negative integers")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or offset % ALIGNMENT:
            raise bad(f"{where}.offset", f"is {shorten(offset)}, not a non-negative multiple of {ALIGNMENT}")
    return spec


def weights_length(spec: dict) -> int:
    """The exact size of a weights file: where its last listed tensor ends (the exporter writes nothing after
    it)."""
    return max(t["offset"] + math.prod(t["shape"]) * np.dtype(t["dtype"]).itemsize for t in spec["tensors"])


def weight_arrays(spec: dict, data: bytes, source: str) -> dict:
    """Read-only arrays over ``data`` (the verified weights file), one per listed tensor, by name. The file
    must be exactly ``weights_length`` bytes: a tensor past its end, or bytes after the last tensor (data the
    manifest does not account for), refuse the bundle, naming the file."""
    arrays = {}
    for t in spec["tensors"]:
        dtype = np.dtype(t["dtype"]).newbyteorder("<")  # ONNX external data is little-endian
        count = math.prod(t["shape"])
        end = t["offset"] + count * dtype.itemsize
        if end > len(data):
            raise BundleError(f"bundle {source}: tensor {shorten(t['name'])} of {spec['file']!r} ends at byte "
                              f"{end}, past the file's {len(data)} bytes")
        arrays[t["name"]] = np.frombuffer(data, dtype=dtype, count=count, offset=t["offset"]).reshape(t["shape"])
    check_weights_length(spec, len(data), source)
    return arrays


def check_weights_length(spec: dict, size: int, source: str) -> None:
    """Refuse a weights file of ``size`` bytes unless that is exactly ``weights_length(spec)``, naming it."""
    expected = weights_length(spec)
    if size != expected:
        raise BundleError(f"bundle {source}: weights file {spec['file']!r} is {size} bytes, but its tensors "
                          f"listed in {MANIFEST} end at byte {expected}: it must be exactly {expected} bytes")
