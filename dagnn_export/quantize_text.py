"""int8 text graph for int8 bundles: the tag-row lookup table and the weights stored as int8 (a quarter of
the bytes a query reads), activations quantised with ranges calibrated on training texts.

Static, not dynamic, quantisation: a dynamic quantiser takes each activation's range from the whole batch
it runs on, so a text's embedding would depend on which other texts share its batch; with calibrated
ranges a text gets the same embedding alone or batched (tests/test_export.py checks it). The exporter's Gemm nodes are rewritten as MatMul + Add first; the final cosine with the label
classifiers stays fp32 (label scores feed calibrated thresholds).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ExportError


def gemm_to_matmul(model) -> int:
    """Rewrite ``Gemm(A, W, b)`` with a constant W (alpha = beta = 1, A not transposed) as
    ``MatMul(A, W') + b``, the same arithmetic. Returns how many were rewritten."""
    from onnx import AttributeProto, helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    changed = 0
    for node in list(graph.node):
        if node.op_type != "Gemm" or node.input[1] not in inits:
            continue
        attrs = {a.name: (a.i if a.type == AttributeProto.INT else a.f) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        w = np.ascontiguousarray(w.T if attrs.get("transB", 0) else w)
        w_name = f"{node.input[1]}_kn"
        graph.initializer.append(numpy_helper.from_array(w, w_name))
        product = f"{node.output[0]}_product" if len(node.input) > 2 else node.output[0]
        new = [helper.make_node("MatMul", [node.input[0], w_name], [product], name=f"{node.name}_matmul")]
        if len(node.input) > 2:
            new.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for k, n in enumerate(new):
            graph.node.insert(at + k, n)
        changed += 1
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return changed


class _TagReader:
    """onnxruntime CalibrationDataReader over bags of words, fed as the text graph's tag-id batches."""

    def __init__(self, bow: np.ndarray, batch_size: int = 256):
        from dagnn_runtime.text_ids import tag_id_batches

        ids = [np.flatnonzero(row) for row in bow]
        self._batches = iter([chunk for _, chunk in tag_id_batches(ids, bow.shape[1], batch_size)])

    def get_next(self):
        chunk = next(self._batches, None)
        return None if chunk is None else {"tags": chunk}

    def rewind(self):  # a single calibration pass does not need it
        raise NotImplementedError


def quantize_text_graph(fp32_path: Path, out_path: Path, work: Path, calibration_bow: np.ndarray) -> dict:
    """Static int8 QDQ quantisation of the tag-id text graph, calibrated on ``calibration_bow`` (training
    texts); returns the manifest record."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32_path))
    rewritten = gemm_to_matmul(model)
    scores = [n.name for n in model.graph.node if "label_scores" in n.output]
    if not scores:
        raise ExportError(f"{fp32_path.name} has no node producing 'label_scores'")
    prepared = work / "text_encoder.matmul.onnx"
    onnx.save(model, str(prepared))
    if not len(calibration_bow):
        raise ExportError("no training texts to calibrate the int8 text graph with")
    quantize_static(str(prepared), str(out_path), _TagReader(calibration_bow), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=False,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Gather", "MatMul"],
                    nodes_to_exclude=scores)
    return {"method": "static", "format": "QDQ", "activations": "uint8", "weights": "int8",
            "calibration_texts": int(len(calibration_bow)), "ops": ["Gather", "MatMul"],
            "gemm_rewritten": rewritten, "fp32": "label_scores"}
