"""Static int8 quantisation of the image graph: calibration images, onnxruntime's QDQ quantiser, two
lossless rewrites of the pixel path that make the int8 encoder faster on CPU, and the choice of the
configuration (weight range, session settings) the int8 graph is built and served with.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from dagnn_runtime.constants import IMAGE_SUFFIXES
from dagnn_runtime.dataset import Dataset
from dagnn_runtime.preprocess import load_batch

from dagnn_runtime.int8_kernels import EXACT_ENTRY

from .errors import ExportError
from .verify import cosines, encode_image_paths_ort, image_paths, ort_session

# int8 configurations, tried in this order: (name, quantiser options, the kernels it needs).
# On x86 CPUs without VNNI onnxruntime's fused U8S8 matrix kernels multiply-add pairs of uint8 x int8
# products into saturating 16-bit sums: with 8-bit weights the image embeddings of a standard run drifted to
# a mean cosine of 0.926 to fp32 there, against 0.993 with exact products (what VNNI CPUs compute fast, and
# ``session.x64quantprecision`` elsewhere). So a graph is checked with exact products, whatever CPU exports
# it, and records the kernels it needs; the runtime chooses them where it runs (``int8_kernels``):
# - 8-bit weights need exact products (0.993);
# - 7-bit weights in every convolution but the depthwise ones (whose kernel sums in 32 bits) cannot
#   saturate the fast kernels on any CPU, but lose a bit of precision (0.981): the fallback.
# A knob: tests and benchmarks may pass other tuples to ``choose_int8_config``.
INT8_CONFIGS = (("int8", {"reduce_range": "none"}, "exact"),
                ("int8-7bit-matmul", {"reduce_range": "matmul"}, "any"))


def calibration_images(source: Path | None, dataset: Dataset, train_idx: np.ndarray, count: int,
                       seed: int = 0) -> tuple[list[Path], str]:
    """Up to ``count`` images for int8 calibration: from a data set folder or a folder of images, else
    from the run's training split. Returns (paths, description)."""
    rng = np.random.default_rng(seed)
    if source is None:
        pool = image_paths(dataset, train_idx, "train")
        what = "training split"
    else:
        source = Path(source)
        if not source.is_dir():
            raise ExportError(f"calibration data folder {source} does not exist")
        if (source / "pairs.jsonl").is_file():
            cal = Dataset.load(source)
            pool = [cal.image_path(i) for i in cal.with_images()]
        else:
            pool = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        what = f"folder {source.name}"
        if not pool:
            raise ExportError(f"no images found in calibration data folder {source}")
    chosen = sorted(rng.permutation(len(pool))[:count])
    return [pool[i] for i in chosen], what


class _PixelReader:
    """onnxruntime CalibrationDataReader over image files (decoded with the shared preprocessing)."""

    def __init__(self, paths, size, batch_size):
        self._batches = iter([paths[i:i + batch_size] for i in range(0, len(paths), batch_size)])
        self.size = size

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"pixels": load_batch(batch, self.size)}

    def rewind(self):  # not needed by a single calibration pass
        raise NotImplementedError


def _pixel_path_nodes(model) -> list:
    """The nodes between the graph input and the first convolution: the backbone's layout change, cast
    and normalisation of the pixels."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found, todo = {}, [model.graph.input[0].name]
    while todo:
        for node in consumers.get(todo.pop(), []):
            if node.op_type != "Conv" and node.name not in found:
                found[node.name] = node
                todo.extend(node.output)
    return list(found.values())


def _scalarize_uniform_constants(model, nodes) -> int:
    """On the pixel path, replace elementwise constants whose entries are all equal (EfficientNet-Lite's
    mean 127 / std 128 on every channel) by scalars: the same arithmetic, but onnxruntime lays int8
    convolutions out channels-last and broadcasts a (1, 1, 1, 3) constant over an image ~25x slower than
    a scalar (4 ms vs 0.15 ms per 224-px image, measured) — a fifth of the int8 encoder's time."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    changed = 0
    for node in nodes:
        if node.op_type not in ("Mul", "Add", "Sub", "Div"):
            continue
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            value = numpy_helper.to_array(inits[name])
            if value.size > 1 and np.all(value == value.flat[0]):
                scalar = numpy_helper.from_array(np.array(value.flat[0], dtype=value.dtype), f"{name}_scalar")
                model.graph.initializer.append(scalar)
                node.input[k] = scalar.name
                changed += 1
    used = {name for node in model.graph.node for name in node.input}
    unused = [init for init in model.graph.initializer if init.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)
    return changed


def _feed_pixels_as_quantized(model) -> bool:
    """When the pixel normalisation is ``x * a + b`` with scalars and ``-b / a`` a whole number z in 0..255
    (EfficientNet-Lite: (x - 127) / 128), it *is* a dequantisation of the uint8 pixels with scale a and
    zero point z. Then feed the pixels straight into the first convolution's DequantizeLinear and drop
    Cast → Mul → Add → QuantizeLinear: lossless, and ~10% less int8 time (no float pass over the image).
    Returns whether the graph had that form."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def scalar(name):
        value = inits.get(name)
        return float(value) if value is not None and value.size == 1 else None

    for quant in graph.node:
        add = producer.get(quant.input[0]) if quant.op_type == "QuantizeLinear" else None
        mul = producer.get(add.input[0]) if add is not None and add.op_type == "Add" else None
        cast = producer.get(mul.input[0]) if mul is not None and mul.op_type == "Mul" else None
        if cast is None or cast.op_type != "Cast":
            continue
        a, b = scalar(mul.input[1]), scalar(add.input[1])
        if not a or b is None:
            return False
        z = -b / a
        if abs(z - round(z)) > 1e-3 or not 0 <= round(z) <= 255:
            return False
        dequants = consumers.get(quant.output[0], [])
        private = all(consumers.get(node.output[0]) == [user] for node, user in ((cast, mul), (mul, add), (add, quant)))
        if not private or not dequants or any(n.op_type != "DequantizeLinear" for n in dequants):
            return False
        graph.initializer.extend([numpy_helper.from_array(np.array(a, np.float32), "pixels_scale"),
                                  numpy_helper.from_array(np.array(round(z), np.uint8), "pixels_zero_point")])
        for dq in dequants:
            dq.input[:] = [cast.input[0], "pixels_scale", "pixels_zero_point"]
        for node in (quant, add, mul, cast):
            graph.node.remove(node)
        used = {name for node in graph.node for name in node.input}
        for init in [i for i in graph.initializer if i.name not in used]:
            graph.initializer.remove(init)
        return True
    return False


def _weights_in_7_bits(model, which: str) -> dict[str, int]:
    """{weight initializer: its output-channel axis} of the weights to quantise in 7 bits: none, all, or all
    but the depthwise convolutions'."""
    if which not in ("none", "all", "matmul"):
        raise ExportError(f"unknown reduce_range {which!r}; choose none, all or matmul")
    if which == "none":
        return {}
    inits = {init.name for init in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.input[1] not in inits:
            continue
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type == "Conv" and attrs.get("group", 1) > 1 and which == "matmul":
            continue
        output_axis_last = node.op_type == "MatMul" or (node.op_type == "Gemm" and not attrs.get("transB"))
        out[node.input[1]] = 1 if output_axis_last else 0
    return out


def quantize_image_graph(fp32_path: Path, out_path: Path, paths: list[Path], size: int, work: Path,
                         per_channel: bool = True, method: str = "minmax", batch_size: int = 16,
                         reduce_range: str = "none", keep_fp32=()) -> dict:
    """Static int8 QDQ quantisation (uint8 activations, int8 weights) calibrated on real images.

    The pixel normalisation in front of the first convolution stays fp32 (it is exact and cheap there);
    quantisation starts at the first convolution's input. Per-channel weights: with per-tensor ones the
    depthwise convolutions of EfficientNet lose most of their precision (cosine to fp32 ~0.8 vs ~0.99).
    ``reduce_range``: which weights get 7 bits instead of 8 (see ``INT8_CONFIGS``): ``none``, ``all``, or
    ``matmul`` (every weight but the depthwise convolutions', which onnxruntime multiplies without 16-bit
    pair sums). ``keep_fp32``: names of further nodes left unquantised (studies of where precision goes)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ExportError(f"unknown calibration method {method!r}; choose {', '.join(methods)}")
    prepared = work / "image_encoder.prep.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
    model = onnx.load(str(prepared))
    front = _pixel_path_nodes(model)
    _scalarize_uniform_constants(model, front)
    onnx.save(model, str(prepared))
    overrides = {name: [{"reduce_range": True, **({"axis": axis} if per_channel else {})}]
                 for name, axis in _weights_in_7_bits(model, reduce_range).items()}
    quantize_static(str(prepared), str(out_path), _PixelReader(paths, size, batch_size),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=per_channel, calibrate_method=methods[method],
                    nodes_to_exclude=[node.name for node in front] + list(keep_fp32),
                    extra_options={"CalibTensorRangeSymmetric": False, "TensorQuantOverrides": overrides})
    quantized = onnx.load(str(out_path))
    pixels_direct = _feed_pixels_as_quantized(quantized)
    if pixels_direct:
        onnx.save(quantized, str(out_path))
    return {"method": "static", "format": "QDQ", "activations": "uint8",
            "weights": "int8" if reduce_range == "none" else f"int8, 7-bit range for {reduce_range} weights",
            "per_channel": per_channel, "calibration_method": method, "calibration_images": len(paths),
            "first_conv_input": "uint8 pixels as they are (the normalisation is their dequantisation)"
            if pixels_direct else "normalised in fp32, then quantised"}


def session_for(kernels: str) -> dict:
    """The session config that computes what a graph needing ``kernels`` gives on every CPU: exact products
    (what VNNI kernels compute, and x64quantprecision elsewhere) for ``exact``; any kernels for ``any``."""
    return dict(EXACT_ENTRY) if kernels == "exact" else {}


def choose_int8_config(fp32_path: Path, out_path: Path, calibration: list[Path], validation: list[Path], size: int,
                       work: Path, *, min_cosine: float, per_channel: bool = True, method: str = "minmax",
                       threads: int = 2, batch_size: int = 32, configs=INT8_CONFIGS) -> dict:
    """Quantise the image graph under the first of ``configs`` whose embeddings of ``validation`` images reach
    a mean cosine of ``min_cosine`` to the fp32 graph's, each computed as the kernels it needs compute them on
    any CPU (``session_for``), and write that graph to ``out_path``. A graph is quantised once per distinct
    quantiser options. Returns the chosen graph's record (``quantize_image_graph``) with ``int8_config`` =
    {chosen, quantizer, kernels, samples, attempts}; refuses, listing every attempt, when none reaches it."""
    fp32_session = {"fp32": ort_session(fp32_path, threads)}
    fp32 = encode_image_paths_ort(validation, size, fp32_session, batch_size)["fp32"][0]
    graphs: dict[tuple, tuple[Path, dict]] = {}
    attempts = []
    for name, options, kernels in configs:
        key = tuple(sorted(options.items()))
        if key not in graphs:
            path = work / f"image_encoder.int8-{len(graphs)}.onnx"
            graphs[key] = path, quantize_image_graph(fp32_path, path, calibration, size, work,
                                                     per_channel=per_channel, method=method, **options)
        path, record = graphs[key]
        session = ort_session(path, threads, session_for(kernels))
        cos = cosines(encode_image_paths_ort(validation, size, {"int8": session}, batch_size)["int8"][0], fp32)
        attempts.append({"name": name, "quantizer": dict(options), "kernels": kernels,
                         "cosine_mean": round(float(cos.mean()), 6), "cosine_min": round(float(cos.min()), 6)})
        if cos.mean() >= min_cosine:
            shutil.copyfile(path, out_path)
            return {**record, "int8_config": {"chosen": name, "quantizer": dict(options), "kernels": kernels,
                                              "samples": len(validation), "attempts": attempts}}
    tried = "; ".join(f"{a['name']} mean {a['cosine_mean']:.4f} min {a['cosine_min']:.4f}" for a in attempts)
    raise ExportError(f"int8 image embeddings drift from fp32 under every configuration (mean cosine < "
                      f"{min_cosine} on {len(validation)} validation images): {tried}")
