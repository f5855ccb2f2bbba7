"""Move a finished graph's large initializers into ``<graph>.onnx.data`` (bundle format 3).

The graph stays standard ONNX: each moved tensor is an ONNX external-data reference (location, offset,
length) to that file beside it, so ``onnx.load`` and onnxruntime open it by path as usual. The returned
``weights`` entry lists the same tensors for the manifest, from which the runtime hands them to onnxruntime
without parsing the graph (``dagnn_runtime.graph_weights``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dagnn_runtime.graph_weights import ALIGNMENT, DTYPES

from .errors import ExportError

MIN_BYTES = 1024  # smaller tensors (scales, zero points, shapes) stay inside the graph


def weights_files(manifest: dict) -> list:
    """The weights files a manifest lists, graph by graph."""
    return [g["weights"]["file"] for g in manifest["graphs"].values() if g.get("weights")]


def move_weights_out(graph: Path, min_bytes: int = MIN_BYTES) -> dict | None:
    """Rewrite ``graph`` with its initializers of at least ``min_bytes`` in ``<graph>.data``; returns the
    manifest's ``weights`` entry, or None when no tensor is that large (nothing is written then)."""
    import onnx

    model = onnx.load(str(graph))
    entry, blob = split_weights(model, graph.name + ".data", min_bytes)
    if entry is not None:
        graph.with_name(entry["file"]).write_bytes(blob)
        graph.write_bytes(model.SerializeToString())
    return entry


def split_weights(model, data_name: str, min_bytes: int = MIN_BYTES) -> tuple[dict | None, bytes]:
    """Turn the large initializers of the ONNX ``model`` (changed in place) into references to ``data_name``
    → (its ``weights`` entry or None, the bytes that file must hold)."""
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import set_external_data

    tensors, blob = [], bytearray()
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.nbytes < min_bytes:
            continue
        if array.dtype.name not in DTYPES:
            raise ExportError(f"{model.graph.name}: initializer {init.name!r} has dtype {array.dtype}, which a "
                              f"bundle cannot hold outside the graph ({', '.join(DTYPES)})")
        blob += bytes(-len(blob) % ALIGNMENT)
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        tensors.append({"name": init.name, "dtype": array.dtype.name, "shape": list(array.shape),
                        "offset": len(blob)})
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            init.ClearField(field)  # quantisers write scales as float_data: one form, raw bytes, for all
        init.raw_data = raw
        set_external_data(init, location=data_name, offset=len(blob), length=len(raw))
        init.ClearField("raw_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        blob += raw
    return ({"file": data_name, "tensors": tensors} if tensors else None), bytes(blob)
